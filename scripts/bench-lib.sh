# Helpers shared by the benchmark scripts; sourced, not run.

now() { date +%s%N; } # nanoseconds

# median: the median of the numbers on stdin, one a line (nothing for none).
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

ratio() { # A C: A / C, or n/a
  awk -v a="$1" -v c="$2" 'BEGIN { if (a != "" && c != "" && c + 0 > 0) printf "%.2f", a / c; else print "n/a" }'
}

# runs KEY: every value of the caller's t[KEY] (times in ms, one a line) in
# seconds, in the order measured.
runs() {
  printf '%s' "${t[$1]:-}" | awk 'NF { printf "%s%.2f", (n++ ? " " : ""), $1 / 1000 }'
}
