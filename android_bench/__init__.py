"""Benchmark harness: host-side devices (host, qemu-arm64, callgrind, adb:<serial>, fake) and the static C++ runner."""
