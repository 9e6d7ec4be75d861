// steering-cvec-eval: evaluate token-id prompts with llama.cpp and its own control-vector path.
//
// Model, context and control vectors are set up by common_init_from_params() from llama.cpp's common library, the
// function llama-cli / llama-server use: --control-vector FILE and --control-vector-scaled FILE:S go through
// common_control_vector_load() (the GGUF loader) and llama_set_adapter_cvec(), exactly as for those tools. Prompts
// are token ids, so the comparison never depends on llama.cpp's tokenizer.
//
// stdin:  one prompt per line, token ids separated by spaces.
// stdout: one JSON object per prompt: {"logits": [next-token logits after the prompt],
//                                      "greedy": [n_predict greedy (argmax) token ids]}
// Exit codes: 0 ok, 1 bad arguments or model, 3 the control vectors could not be loaded or applied (common only
// logs that case and goes on unsteered; this harness refuses to), 4 a prompt failed to evaluate.
//
// Built by scripts/build_llamacpp.sh from the llama.cpp sources vendored in the llama-cpp-python sdist, in the
// same CMake build as the llama-cpp-python wheel (same libllama).

#include "arg.h"
#include "common.h"
#include "llama.h"

#include <clocale>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static llama_token argmax(const float * logits, int n_vocab) {
    llama_token best = 0;
    for (int i = 1; i < n_vocab; ++i) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

static bool decode(llama_context * ctx, const std::vector<llama_token> & tokens) {
    common_batch batch = common_batch_get_one(ctx, tokens);  // positions continue from the memory
    return llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch.get()) == 0;
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    common_params params;
    common_init();
    if (!common_params_parse(argc, argv, params, LLAMA_EXAMPLE_COMMON)) {
        return 1;
    }
    llama_backend_init();
    params.warmup = false;

    auto init = common_init_from_params(params);
    llama_model * model = init->model();
    llama_context * ctx = init->context();
    if (model == nullptr || ctx == nullptr) {
        fprintf(stderr, "steering-cvec-eval: failed to load the model or create a context\n");
        return 1;
    }
    if (!params.control_vectors.empty()) {
        // common_init_from_params() only logs a control vector it could not load or apply; check it did apply.
        const auto cvec = common_control_vector_load(params.control_vectors);
        if (cvec.n_embd != llama_model_n_embd(model)) {
            fprintf(stderr, "steering-cvec-eval: control vectors not applied (n_embd %d, model n_embd %d)\n",
                    cvec.n_embd, llama_model_n_embd(model));
            return 3;
        }
    }

    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int n_predict = params.n_predict > 0 ? params.n_predict : 16;
    std::string line;
    while (std::getline(std::cin, line)) {
        std::vector<llama_token> tokens;
        std::istringstream fields(line);
        for (long id; fields >> id;) {
            tokens.push_back((llama_token) id);
        }
        if (tokens.empty()) {
            continue;
        }
        llama_memory_clear(llama_get_memory(ctx), true);
        if (!decode(ctx, tokens)) {
            fprintf(stderr, "steering-cvec-eval: failed to evaluate a prompt of %zu tokens\n", tokens.size());
            return 4;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        printf("{\"logits\": [");
        for (int i = 0; i < n_vocab; ++i) {
            printf(i ? ", %.9g" : "%.9g", logits[i]);
        }
        printf("], \"greedy\": [");
        for (int step = 0; step < n_predict; ++step) {
            const llama_token next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
            printf(step ? ", %d" : "%d", next);
            if (!decode(ctx, {next})) {
                fprintf(stderr, "steering-cvec-eval: failed to evaluate a generated token\n");
                return 4;
            }
        }
        printf("]}\n");
        fflush(stdout);
    }
    llama_backend_free();
    return 0;
}
