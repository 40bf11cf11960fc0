// The communicator over MPI (only built when CMake finds MPI: BNFF_TRAINER_MPI).
#pragma once

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "distributed.hpp"

namespace trainer {

// MPI_Init_thread on construction (the threads bnff runs never call MPI: FUNNELED
// suffices), MPI_Finalize on destruction; collectives on MPI_COMM_WORLD.
class mpi_session : public communicator {
 public:
  mpi_session(int& argc, char**& argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Errors return codes (turned into exceptions below) instead of aborting silently.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~mpi_session() override { MPI_Finalize(); }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_gather(const double* in, std::size_t n, double* out) override {
    check(MPI_Allgather(in, count(n), MPI_DOUBLE, out, count(n), MPI_DOUBLE, MPI_COMM_WORLD), "MPI_Allgather");
  }
  void all_gather(const std::uint64_t* in, std::size_t n, std::uint64_t* out) override {
    check(MPI_Allgather(in, count(n), MPI_UINT64_T, out, count(n), MPI_UINT64_T, MPI_COMM_WORLD), "MPI_Allgather");
  }
  void all_reduce_sum(double* data, std::size_t n) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data, count(n), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  }
  void all_reduce_sum(float* data, std::size_t n) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data, count(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  }

  // Ends every rank of the job: a rank that fails alone must not leave the others waiting in a collective.
  [[noreturn]] void abort(int code) {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
  }

 private:
  static int count(std::size_t n) {
    if (n > std::size_t(2147483647)) throw std::length_error("MPI message of " + std::to_string(n) + " elements");
    return int(n);
  }
  static void check(int code, const char* what) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    throw std::runtime_error(std::string(what) + " failed: " + std::string(text, std::size_t(len)));
  }

  int rank_ = 0, size_ = 1;
};

}  // namespace trainer
