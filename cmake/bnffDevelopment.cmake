# Settings for bnff's own tests, benchmarks and examples. None of this reaches
# users of bnff::bnff: it lives on a separate INTERFACE target that only the
# project's own executables link.
find_package(OpenMP)

add_library(bnff_dev INTERFACE)
target_link_libraries(bnff_dev INTERFACE bnff::bnff)
if(OpenMP_CXX_FOUND)
  target_link_libraries(bnff_dev INTERFACE OpenMP::OpenMP_CXX)
endif()
target_compile_options(bnff_dev INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow>
  # GCC 12 reports the AVX-512 intrinsic headers' own "__Y may be used uninitialized"
  # (and <regex> internals under ASan): false positives that would bury real warnings.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
if(BNFF_NATIVE)
  include(CheckCXXCompilerFlag)
  check_cxx_compiler_flag(-march=native BNFF_HAS_MARCH_NATIVE)
  if(BNFF_HAS_MARCH_NATIVE)
    target_compile_options(bnff_dev INTERFACE -march=native)
  endif()
endif()

# Sanitizer builds (preset "asan") set BNFF_SANITIZE=ON.
option(BNFF_SANITIZE "Build tests with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
if(BNFF_SANITIZE)
  target_compile_options(bnff_dev INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                            -fno-sanitize-recover=undefined)
  target_link_options(bnff_dev INTERFACE -fsanitize=address,undefined)
endif()
