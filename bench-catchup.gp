set terminal pngcairo size 900,540
set output 'bench-catchup.png'
set title 'rkv: catching up on a 1 MiB change'
set xlabel 'database size (MiB)'
set ylabel 'time (ms)'
set logscale xy
set grid
set key top left
plot 'bench-catchup.dat' using 1:2 with linespoints lw 2 title 'rkv incremental apply', 'bench-catchup.dat' using 1:3 with linespoints lw 2 title 'full restore'
