#!/usr/bin/env bash
# Regenerates corpora/kjv.txt from Debian's bible-kjv-text package (the King James Version, public domain).
# Needs root for apt-get. Output: one verse per line, a "Book N" line opening each chapter, a blank line between
# chapters (so `--sequence document` treats a chapter as one document).
set -euo pipefail
cd "$(dirname "$0")"
command -v bible >/dev/null || { apt-get update -qq && apt-get install -y -qq bible-kjv bible-kjv-text; }
bible -l100000 "gen1:1-rev22:21" \
  | awk '/^[[:space:]]*$/ { next }
         /^ +[0-9]+ / { sub(/^ +[0-9]+ /, ""); sub(/[[:space:]]+$/, ""); print; next }
         { if (n++) print ""; sub(/[[:space:]]+$/, ""); print }' > kjv.txt.tmp
mv kjv.txt.tmp kjv.txt
wc -c kjv.txt
