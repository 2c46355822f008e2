# Grouped bars of msg/s per message size, one bar per path, with min–max
# error bars and the median printed above each bar. Run by
# `bench/benchlib.py chart` (never by hand: it writes the data file):
#
#   datafile, outfile   the data (read) and the PNG (written)
#   npaths              paths drawn; path j has legend titleJ and colour colorJ
#   nrows               sizes (rows of the data file)
#   charttitle, ylabel_text
#
# datafile: tab-separated, one row per size: the size label, then per path
# (1..npaths) median, min, max; "-" where a path has no run at that size.
# Nothing in the picture depends on the clock, so the same data gives the
# same PNG.
n = npaths
set terminal pngcairo size 960,540 font "DejaVu Sans,10" noenhanced
set output outfile
set title charttitle
set datafile separator "\t"
set datafile missing "-"
set style data histogram
set style histogram errorbars gap 1 lw 1.2
set style fill solid 0.85 border -1
set boxwidth 1.0 relative
set key top right
set ylabel ylabel_text
set xlabel "message size"
set xrange [-0.6:nrows - 0.4]
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set grid ytics
# a bar of path j (0-based) in cluster i; clusters are 1 wide, each bar
# 1/(n + gap) of that (gap 1, as set above)
xpos(i, j) = i + (j - (n - 1) / 2.0) / (n + 1)
plot for [j=1:n] datafile using (column(3*j-1)):(column(3*j)):(column(3*j+1)):xtic(1) \
         title value(sprintf("title%d", j)) lc rgb value(sprintf("color%d", j)), \
     for [j=1:n] datafile using (xpos($0, j - 1)):(column(3*j+1)):(sprintf("%.0f", column(3*j-1))) \
         with labels offset 0,0.8 notitle
