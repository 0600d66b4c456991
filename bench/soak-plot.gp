# SPDX-License-Identifier: AGPL-3.0-only
# Plots bench/soak.sh results: gnuplot -e "results='bench/soak-results.csv'; out='bench/soak.svg'" bench/soak-plot.gp
# Columns: elapsed_s,rss_kib,goroutines,open_fds,ring_drops,active_flows,rib_routes,ipfix_records
if (!exists("results")) results = 'bench/soak-results.csv'
if (!exists("out")) out = 'bench/soak.svg'
set terminal svg size 900,1000 dynamic font "sans,11" background "white"
set output out
set datafile separator ","
set key top left
set grid
set xlabel "minutes"
set multiplot layout 4,1 title "rfm agent soak"
set ylabel "RSS (MiB)"
set yrange [0:*]
plot results using ($1/60):($2/1024) every ::1 with lines lw 2 title "VmRSS"
set ylabel "count"
plot results using ($1/60):3 every ::1 with lines lw 2 title "goroutines", \
     results using ($1/60):4 every ::1 with lines lw 2 title "open fds"
set ylabel "count"
set key bottom right
plot results using ($1/60):6 every ::1 with lines lw 2 title "active flows", \
     results using ($1/60):7 every ::1 with lines lw 2 title "RIB routes"
set ylabel "total"
set key top left
plot results using ($1/60):5 every ::1 with lines lw 2 title "ring-buffer drops", \
     results using ($1/60):8 every ::1 with lines lw 2 axes x1y1 title "IPFIX records"
unset multiplot
