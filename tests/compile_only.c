/* Compile-only check: the header as C99 and as C++17 (the Makefile builds this file both ways,
   -Wall -Wextra -Werror -pedantic), with the implementation, and calls one function of each part. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include "../utgolf.h" /* twice: the include guard and the implementation guard must both hold */

int main(void) {
    utg_config c = utg_config_resolve(NULL);
    utg_msg msg;
    return (utg_config_validate(&c, &msg) == UTG_OK && utg_config_knob_count() > 0 &&
            utg_result_string(UTG_ERR_FORMAT)[0] != 0)
               ? 0
               : 1;
}
