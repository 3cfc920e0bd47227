# find_package(hancock): the imported target hancock::hancock (libhancock.so, hancock.h on its
# include path). hancock.h names libuv's loop type, so libuv's headers come with it.
include(CMakeFindDependencyMacro)
find_dependency(PkgConfig)
pkg_check_modules(HANCOCK_LIBUV REQUIRED IMPORTED_TARGET libuv)
include(${CMAKE_CURRENT_LIST_DIR}/hancockTargets.cmake)
set_property(TARGET hancock::hancock APPEND PROPERTY INTERFACE_LINK_LIBRARIES PkgConfig::HANCOCK_LIBUV)
