set terminal pngcairo size 900,540
set output 'bench-lag-cdf.png'
set title 'write-to-readable lag under 5000 SET/s (CDF)'
set xlabel 'lag (ms)'
set ylabel 'fraction of probes'
set logscale x
set grid
set key bottom right
plot 'bench-lag.dat' index 0 using 1:2 with lines lw 2 title 'rkv, defaults', 'bench-lag.dat' index 1 using 1:2 with lines lw 2 title 'rkv, defaults, 2 CPU hogs beside it', 'bench-lag.dat' index 2 using 1:2 with lines lw 2 title 'rkv, backups only (--log-interval 0 --interval 100ms)', 'bench-lag.dat' index 3 using 1:2 with lines lw 2 title 'Litestream 0.5.17, restore -f, 10 ms sync/monitor/follow', 'bench-lag.dat' index 4 using 1:2 with lines lw 2 title 'rkv, defaults, 10m of tailing (long run)'
