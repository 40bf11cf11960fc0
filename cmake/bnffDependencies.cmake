# bnff's two dependencies, found the same way by the build tree and the
# installed package (bnffConfig.cmake includes this file).
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.4 NO_MODULE)
find_dependency(xsimd 8.1)
# Debian's xsimd 8.1 package config links its target to `xtl` without finding
# it; xsimd's headers need xtl only for xtl complex numbers, which bnff does not
# use. Stand in an empty target when no real one exists so linking works.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_bnff_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_bnff_xsimd_links MATCHES "(^|;)xtl(;|$)")
    find_package(xtl QUIET)
    if(NOT TARGET xtl)
      add_library(xtl INTERFACE IMPORTED)
    endif()
  endif()
endif()
