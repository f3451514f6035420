// Cell-list pair search, one thread per atom, for many systems at once.
// Compiled by CuPy (RawModule) on the GPU; the same source compiles as C++ on the host
// (tests/host_kernels.py) so that its logic is tested on machines without a GPU.
//
// Inputs are prepared by mlff/neighbors/cell_list.py:
//   rw      [N,3]   positions wrapped into the cell along periodic directions (Å, double)
//   wrap    [N,3]   integer lattice shifts removed by that wrapping (r = rw + wrap @ box)
//   sys     [N]     system index of each atom
//   bins    [N,3]   bin of each atom along the three box directions
//   box     [S,3,3] box rows a1, a2, a3 (the cell, completed along non-periodic directions)
//   pbc     [S,3]   1 where periodic
//   nbins   [S,3]   bins along each direction;  reach [S,3]: stencil half-width in bins
//   bin_offset [S]  first global bin of each system
//   order   [N]     atoms sorted by global bin;  bin_start / bin_count [B]
// Pass 1 (write == 0) stores the number of neighbours of atom i in counts[i].
// Pass 2 (write == 1) writes atom i's pairs at offsets[i].. (those below `capacity`).
// A pair (i, j, S) means D = r[j] - r[i] + S @ cell with |D| < cutoff, as ase.neighborlist.

typedef long long i64;

__device__ i64 floor_div(i64 a, i64 n) { return a >= 0 ? a / n : -((-a - 1) / n) - 1; }

extern "C" __global__ void pair_search(
    const i64 n_atoms, const double* rw, const i64* wrap, const i64* sys, const i64* bins,
    const double* box, const i64* pbc, const i64* nbins, const i64* reach,
    const i64* bin_offset, const i64* order, const i64* bin_start, const i64* bin_count,
    const double cutoff2, i64* counts, const i64* offsets, const i64 capacity,
    i64* out_i, i64* out_j, i64* out_S, const int write)
{
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_atoms) return;
    const i64 s = sys[i];
    const double* a = box + 9 * s;
    const i64* n = nbins + 3 * s;
    i64 lo[3], hi[3];
    for (int k = 0; k < 3; ++k) {
        const i64 b = bins[3 * i + k], r = reach[3 * s + k];
        lo[k] = b - r;
        hi[k] = b + r;
        if (!pbc[3 * s + k]) {  // open direction: no images, stay inside the bin range
            if (lo[k] < 0) lo[k] = 0;
            if (hi[k] > n[k] - 1) hi[k] = n[k] - 1;
        }
    }
    const double xi = rw[3 * i], yi = rw[3 * i + 1], zi = rw[3 * i + 2];
    const i64 base = write ? offsets[i] : 0;
    i64 found = 0;
    for (i64 u = lo[0]; u <= hi[0]; ++u) {
        const i64 su = floor_div(u, n[0]), bu = u - su * n[0];
        for (i64 v = lo[1]; v <= hi[1]; ++v) {
            const i64 sv = floor_div(v, n[1]), bv = v - sv * n[1];
            for (i64 w = lo[2]; w <= hi[2]; ++w) {
                const i64 sw = floor_div(w, n[2]), bw = w - sw * n[2];
                const double tx = su * a[0] + sv * a[3] + sw * a[6];
                const double ty = su * a[1] + sv * a[4] + sw * a[7];
                const double tz = su * a[2] + sv * a[5] + sw * a[8];
                const i64 bin = bin_offset[s] + (bu * n[1] + bv) * n[2] + bw;
                const i64 end = bin_start[bin] + bin_count[bin];
                for (i64 p = bin_start[bin]; p < end; ++p) {
                    const i64 j = order[p];
                    if (j == i && su == 0 && sv == 0 && sw == 0) continue;
                    const double dx = rw[3 * j] - xi + tx;
                    const double dy = rw[3 * j + 1] - yi + ty;
                    const double dz = rw[3 * j + 2] - zi + tz;
                    if (dx * dx + dy * dy + dz * dz >= cutoff2) continue;
                    const i64 idx = base + found;
                    ++found;
                    if (!write || idx >= capacity) continue;
                    out_i[idx] = i;
                    out_j[idx] = j;
                    out_S[3 * idx] = su - wrap[3 * j] + wrap[3 * i];
                    out_S[3 * idx + 1] = sv - wrap[3 * j + 1] + wrap[3 * i + 1];
                    out_S[3 * idx + 2] = sw - wrap[3 * j + 2] + wrap[3 * i + 2];
                }
            }
        }
    }
    if (!write) counts[i] = found;
}
