/* The README's vendoring example: build the train_gpt.py baseline on the CPU, score one batch of
   token ids, and take the gradients. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>

int main(void) {
    static int32_t x[1024], y[1024];
    utg_model *m;
    double loss;
    int i;
    for (i = 0; i < 1024; i++) { x[i] = (i * 31) % 1024; y[i] = (i * 31 + 31) % 1024; }
    if (utg_model_create(NULL, &m) != UTG_OK) { printf("error: %s\n", utg_model_message(m)); return 1; }
    if (utg_model_forward(m, x, y, 1, &loss) != UTG_OK) { printf("error: %s\n", utg_model_message(m)); return 1; }
    utg_model_backward(m, 1.0f); /* gradients land in utg_model_grads(m) */
    printf("utgolf %s: %zu parameters, loss at init %.4f nats (ln 1024 = 6.9315)\n", utg_version(),
           utg_model_param_count(m), loss);
    utg_model_destroy(m);
    return 0;
}
