# Injected into the llama-cpp-python CMake build (CMAKE_PROJECT_llama_cpp_INCLUDE) by scripts/build_llamacpp.sh:
# once that project has added llama.cpp, also build steering-cvec-eval against its llama-common and llama targets.
# The wheel itself is unchanged (the harness is not installed into it).
set(STEERING_CVEC_EVAL_SOURCE "${CMAKE_CURRENT_LIST_DIR}/cvec_eval.cpp")
function(steering_adapter_add_cvec_eval)
    add_executable(steering-cvec-eval "${STEERING_CVEC_EVAL_SOURCE}")
    target_link_libraries(steering-cvec-eval PRIVATE llama-common llama)
    set_target_properties(steering-cvec-eval PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
endfunction()
cmake_language(DEFER CALL steering_adapter_add_cvec_eval)
