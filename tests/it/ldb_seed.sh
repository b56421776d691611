#!/usr/bin/env bash
# A replication script in the style written for RocksDB's ldb: put keys,
# back up, restore into a second directory, read there. The tests run it with
# LDB pointing at rkv, unchanged.
# Usage: LDB=/path/to/ldb ldb_seed.sh WORKDIR
set -euo pipefail
LDB=${LDB:-ldb}
DIR=$1

$LDB --db=$DIR/master --create_if_missing put user:1 Alice
$LDB --db=$DIR/master put user:2 Bob
$LDB --db=$DIR/master backup --backup_dir=$DIR/backup
$LDB --db=$DIR/follower restore --backup_dir=$DIR/backup
$LDB --db=$DIR/follower get user:1
$LDB --db=$DIR/follower get user:2
