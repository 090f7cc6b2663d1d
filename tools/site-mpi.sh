#!/usr/bin/env bash
# Print the machine's own mpiexec (an HPC site's MPI module, a Debian/RPM MPI), if one is on
# PATH; nothing otherwise. The given venv's bin is not the site's (it may hold the mpich
# wheel's mpiexec from an earlier install). Used by the Makefile to decide between building
# mpi4py against the site's MPI and installing the mpich wheel.
venv_bin="$(cd "${1:-.venv}/bin" 2>/dev/null && pwd -P)"
IFS=: read -ra dirs <<< "$PATH"
for dir in "${dirs[@]}"; do
  [ -n "$dir" ] || continue
  real="$(cd "$dir" 2>/dev/null && pwd -P)" || continue
  [ -n "$venv_bin" ] && [ "$real" = "$venv_bin" ] && continue
  if [ -x "$dir/mpiexec" ]; then echo "$dir/mpiexec"; exit 0; fi
done
exit 0
