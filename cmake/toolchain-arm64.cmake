# Cross build for arm64 (aarch64) on a Debian x86 machine with multiarch: Debian's
# gcc-aarch64-linux-gnu/g++-aarch64-linux-gnu and libbpf-dev:arm64 libelf-dev:arm64
# zlib1g-dev:arm64 (scripts/setup.sh --for arm64 installs them). Used by
# scripts/build-native.sh --arch arm64 and the arm64 kernel matrix.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# libraries and pkg-config from the arm64 multiarch tree only, never the host's
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu)
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
