# bpf_object(NAME SRC [DEPS ...]): clang -target bpf (CO-RE, no vmlinux.h from the
# running kernel) -> bpftool gen object (strips DWARF) -> bpftool gen skeleton.
# Produces ${CMAKE_BINARY_DIR}/bpf/NAME.bpf.o, NAME.skel.h and an INTERFACE target
# NAME_skel whose include path holds the skeleton.
find_program(BPF_CLANG NAMES clang clang-14 clang-15 clang-16 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

execute_process(COMMAND ${CMAKE_C_COMPILER} -print-multiarch
  OUTPUT_VARIABLE BPF_MULTIARCH OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT BPF_MULTIARCH)
  set(BPF_MULTIARCH ${CMAKE_LIBRARY_ARCHITECTURE})
endif()
# bpf_tracing.h's register layout (the kretprobe's return value) follows the target CPU,
# never the build machine: a cross toolchain file sets CMAKE_SYSTEM_PROCESSOR.
string(TOLOWER "${CMAKE_SYSTEM_PROCESSOR}" _bpf_cpu)
if(_bpf_cpu MATCHES "^(x86_64|amd64)$")
  set(BPF_TARGET_ARCH x86)
elseif(_bpf_cpu MATCHES "^(aarch64|arm64)$")
  set(BPF_TARGET_ARCH arm64)
else()
  message(FATAL_ERROR "BPF programs: unsupported target processor '${CMAKE_SYSTEM_PROCESSOR}' (x86_64 or aarch64)")
endif()

function(bpf_object NAME SRC)
  set(out_dir ${CMAKE_BINARY_DIR}/bpf)
  set(raw ${out_dir}/${NAME}.tmp.o)
  set(obj ${out_dir}/${NAME}.bpf.o)
  set(skel ${out_dir}/${NAME}.skel.h)
  file(MAKE_DIRECTORY ${out_dir})
  add_custom_command(
    OUTPUT ${obj} ${skel}
    COMMAND ${BPF_CLANG} -g -O2 -Wall -target bpf -D__TARGET_ARCH_${BPF_TARGET_ARCH}
            -I/usr/include/${BPF_MULTIARCH} -I${CMAKE_CURRENT_SOURCE_DIR}/bpf
            -c ${SRC} -o ${raw}
    COMMAND ${BPFTOOL} gen object ${obj} ${raw}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${NAME}_bpf > ${skel}
    DEPENDS ${SRC} ${ARGN}
    COMMENT "BPF ${NAME}: compile, strip, skeleton"
    VERBATIM)
  add_custom_target(${NAME}_bpf_gen DEPENDS ${obj} ${skel})
  add_library(${NAME}_skel INTERFACE)
  add_dependencies(${NAME}_skel ${NAME}_bpf_gen)
  target_include_directories(${NAME}_skel INTERFACE ${out_dir})
endfunction()
