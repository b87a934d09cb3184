"""What vaelab needs from the machine: the device (device), the CPU threads (cpu) and OpenMP's wait
policy (omp), torchrun's processes (distributed), a clean stop on signals (stop) and atomic file writes
(storage). omp and storage import no torch: the `vaelab` command sets the wait policy before torch loads."""
