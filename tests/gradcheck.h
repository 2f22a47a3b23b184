/* Central finite differences against an analytic gradient.

   A case exposes its inputs (value arrays with their analytic-gradient arrays), an objective that
   reads the inputs and returns a scalar in double, and a function that fills the analytic
   gradients. The check probes up to max_probe elements per input (spread evenly, always including
   the first and last) and reports the worst ratio |analytic - numeric| / (atol + rtol*|numeric|),
   where atol = atol_frac * max|analytic| over that input. A ratio <= 1 passes. */
#ifndef UTG_GRADCHECK_H
#define UTG_GRADCHECK_H
#include <math.h>
#include <stdio.h>

typedef struct gc_input {
    const char *name;
    float *x; /* values, perturbed in place and restored */
    float *g; /* analytic gradient, filled by the case's grad function */
    size_t n;
} gc_input;

typedef struct gc_case {
    void *ctx;
    double (*objective)(void *ctx);
    void (*grad)(void *ctx); /* zeroes and fills every gc_input.g */
    gc_input in[8];
    int n_in;
} gc_case;

typedef struct gc_opts {
    double h;         /* step, relative to max(1, |x|) */
    double rtol;      /* relative tolerance on |numeric| */
    double atol_frac; /* absolute tolerance as a fraction of the largest analytic gradient */
    double atol_abs;  /* absolute tolerance (the finite difference's resolution; 0 = none) */
    size_t max_probe; /* elements probed per input; 0 = all */
    int verbose;
} gc_opts;

static gc_opts gc_default_opts(void) {
    gc_opts o;
    o.h = 1e-2;
    o.rtol = 2e-2;
    o.atol_frac = 2e-3;
    o.atol_abs = 0.0;
    o.max_probe = 64;
    o.verbose = 0;
    return o;
}

/* Returns the worst ratio over all inputs (<= 1 passes); *worst_input names where it was. */
static double gc_check(gc_case *c, const gc_opts *o, const char **worst_input) {
    double worst = 0.0;
    int i;
    c->grad(c->ctx);
    for (i = 0; i < c->n_in; i++) {
        gc_input *in = &c->in[i];
        size_t n = in->n, probes = (o->max_probe && o->max_probe < n) ? o->max_probe : n, p;
        double gmax = 0.0;
        for (p = 0; p < n; p++) if (fabs(in->g[p]) > gmax) gmax = fabs(in->g[p]);
        for (p = 0; p < probes; p++) {
            size_t k = probes == n ? p : (probes > 1 ? p * (n - 1) / (probes - 1) : 0);
            float x0 = in->x[k];
            double h = o->h * (fabs(x0) > 1.0 ? fabs(x0) : 1.0), lp, lm, num, ratio;
            volatile float xp = (float)(x0 + h), xm = (float)(x0 - h);
            double hp = (double)xp - x0, hm = x0 - (double)xm; /* the steps actually taken in float */
            in->x[k] = xp;
            lp = c->objective(c->ctx);
            in->x[k] = xm;
            lm = c->objective(c->ctx);
            in->x[k] = x0;
            num = (lp - lm) / (hp + hm);
            ratio = fabs(in->g[k] - num) / (o->atol_abs + o->atol_frac * gmax + o->rtol * fabs(num) + 1e-30);
            if (!(ratio <= HUGE_VAL)) ratio = HUGE_VAL; /* a NaN gradient (or objective) fails, never passes */
            if (o->verbose && ratio > 1.0)
                printf("      %s[%zu]: analytic %.6g numeric %.6g ratio %.3g\n", in->name, k, in->g[k], num, ratio);
            if (ratio > worst) {
                worst = ratio;
                if (worst_input) *worst_input = in->name;
            }
        }
    }
    return worst;
}

#endif
