set terminal pngcairo size 900,540
set output 'bench-lag-cdf.png'
set title 'rkv: write-to-readable lag on followers (CDF)'
set xlabel 'lag (ms)'
set ylabel 'fraction of writes'
set grid
set key bottom right
plot 'bench-lag.dat' index 0 using 1:2 with lines lw 2 title '--interval 1s', 'bench-lag.dat' index 1 using 1:2 with lines lw 2 title '--interval 10s'
