#!/usr/bin/env bash
# Cut a wheel set made by ../shared/gpu-node/pack.sh into smaller parts, so that each device call fits its limit.
#
#   bash benchmarks/gpu-node/repack.sh DEST [MIB]      # e.g. .gpu-core 32 (the default)
#
# A device call carries the checkout (tracked and untracked-not-ignored files) plus its carry paths, at most
# 64 MiB in all. pack.sh cuts parts of 50 MB; with the tracked tree at ~26 MB (xtb_small.h5 alone is 17.7 MB)
# a 50 MB part no longer fits. This joins DEST's parts, cuts them again into MIB-MiB parts in the same layout
# (DEST/part_XX.d/{part_XX,install.sh,TOTAL}; the same install.sh, which counts parts from TOTAL), checks that
# the joined bytes are unchanged, and prints each call's size (tree + part): it exits 1 if one is over 64 MiB.
set -euo pipefail
dest=${1:?usage: repack.sh DEST [MIB]}; dest=${dest%/}
mib=${2:-32}
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
limit=$((64 * 1024 * 1024))
shopt -s nullglob
old=("$dest"/part_*.d/part_*)
[ ${#old[@]} -gt 0 ] || { echo "repack.sh: no parts in $dest (run ../shared/gpu-node/pack.sh first)" >&2; exit 2; }
install=$(ls "$dest"/part_*.d/install.sh | head -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat "${old[@]}" > "$tmp/all.tar"
before=$(sha256sum < "$tmp/all.tar")
cp "$install" "$tmp/install.sh"
rm -rf "$dest"; mkdir -p "$dest"
split -b "${mib}M" "$tmp/all.tar" "$dest/part_"
parts=("$dest"/part_*)
for p in "${parts[@]}"; do
  mkdir "$p.d"; mv "$p" "$p.d/"; cp "$tmp/install.sh" "$p.d/"; echo "${#parts[@]}" > "$p.d/TOTAL"
done
after=$(cat "$dest"/part_*.d/part_* | sha256sum)
[ "$before" = "$after" ] || { echo "repack.sh: the joined parts differ from the set (sha256)" >&2; exit 1; }
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "$dest: ${#old[@]} parts -> ${#parts[@]} parts of at most $mib MiB (same bytes); tree $tree bytes"
status=0
for p in "${parts[@]}"; do
  size=$(du -cb "$p.d" | tail -1 | cut -f1)
  total=$((tree + size))
  verdict=ok; [ "$total" -le "$limit" ] || { verdict="OVER 64 MiB"; status=1; }
  printf '  carry %-24s %10d bytes + tree = %10d of %d  %s\n' "$p.d" "$size" "$total" "$limit" "$verdict"
done
exit $status
