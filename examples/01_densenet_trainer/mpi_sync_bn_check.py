#!/usr/bin/env python3
"""Synchronized BN over MPI, end to end (a ctest when MPI is found).

Trains a tiny DenseNet for a few steps three times on the same data and weights:
  1 rank  with batch B                (the reference),
  2 ranks with batch B / 2 each, --sync-bn,
  2 ranks with batch B / 2 each, --no-sync-bn,
and compares the per-step losses (--print-step-losses). With synchronized BN the
two-rank run takes the one-rank run's steps: its losses agree within float
tolerance. Without it each rank normalizes with half the batch, which changes
the loss from the first step on. Prints both figures; exits non-zero on failure.
"""
import argparse
import re
import subprocess
import sys

TINY = ["--image-size", "8", "--blocks", "2,2", "--growth", "4", "--train-images", "64", "--val-images", "16",
        "--epochs", "1", "--threads", "1", "--print-step-losses"]
STEP = re.compile(r"^step (\d+) loss (\S+)$", re.M)


def losses(cmd):
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=100)
    if run.returncode != 0:
        sys.exit("failed (exit %d): %s\n%s" % (run.returncode, " ".join(cmd), run.stdout))
    found = [(int(s), float(v)) for s, v in STEP.findall(run.stdout)]
    if not found:
        sys.exit("no 'step N loss X' lines from: %s\n%s" % (" ".join(cmd), run.stdout))
    return [v for _, v in found]


def max_relative_difference(a, b):
    return max(abs(x - y) / max(abs(x), abs(y), 1e-30) for x, y in zip(a, b))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--trainer", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--impl", default="fused")
    p.add_argument("--sync-tolerance", type=float, default=1e-5, help="largest relative loss difference with --sync-bn")
    p.add_argument("--nosync-minimum", type=float, default=1e-3,
                   help="smallest largest-relative-difference that counts as measurably different without it")
    a = p.parse_args()

    mpirun = [a.mpiexec, "--allow-run-as-root", "--oversubscribe", "-np"]
    args = TINY + ["--batch", str(a.batch), "--steps", str(a.steps), "--impl", a.impl]
    one = losses(mpirun + ["1", a.trainer] + args)
    synced = losses(mpirun + ["2", a.trainer] + args + ["--sync-bn"])
    local = losses(mpirun + ["2", a.trainer] + args + ["--no-sync-bn"])
    if not (len(one) == len(synced) == len(local) == a.steps):
        sys.exit("expected %d steps, got %d, %d, %d" % (a.steps, len(one), len(synced), len(local)))

    print("%5s  %14s  %14s  %14s" % ("step", "1 rank", "2 ranks sync", "2 ranks local"))
    for i, (x, y, z) in enumerate(zip(one, synced, local)):
        print("%5d  %14.9f  %14.9f  %14.9f" % (i + 1, x, y, z))
    d_sync, d_local = max_relative_difference(one, synced), max_relative_difference(one, local)
    print("largest relative loss difference vs 1 rank: --sync-bn %.2e (must be < %.0e), --no-sync-bn %.2e (must be > %.0e)"
          % (d_sync, a.sync_tolerance, d_local, a.nosync_minimum))
    if not d_sync < a.sync_tolerance:
        sys.exit("FAILED: 2 ranks with --sync-bn do not follow the 1-rank losses")
    if not d_local > a.nosync_minimum:
        sys.exit("FAILED: 2 ranks with --no-sync-bn are not measurably different from 1 rank")
    print("sync-bn check passed (%s)" % a.impl)


if __name__ == "__main__":
    main()
