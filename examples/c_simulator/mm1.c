/* mm1: a tiny M/M/1 queue simulator in C, driven by simlab through its command-line path.
 *
 *   mm1 --arrival-rate L --service-rate M --seed S --horizon T [--warmup W]
 *
 * Customers arrive as a Poisson process (rate L) and are served one at a time (exponential, rate
 * M). Prints one JSON line on stdout with the statistics of the window (W, W + T]:
 *   {"mean_wait": Wq, "mean_time_in_system": W, "utilisation": rho, "customers": n, "events": e}
 * Bad arguments: a message on stderr, exit 2. Random numbers: xoshiro256** seeded by splitmix64
 * from S (simlab's {seed}: one integer in [0, 2^63)).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s[4];

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next(void) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}

/* An exponential variate with the given rate (1 - u is in (0, 1]: never log(0)). */
static double exponential(double rate) {
    double u = (double)(next() >> 11) * 0x1.0p-53;
    return -log(1.0 - u) / rate;
}

static double number(const char *option, const char *text) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || *end || end == text || !isfinite(value)) {
        fprintf(stderr, "mm1: %s: not a number: '%s'\n", option, text);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv) {
    double lambda = -1, mu = -1, horizon = -1, warmup = 0;
    uint64_t seed = 0;
    int have_seed = 0;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) { fprintf(stderr, "mm1: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--arrival-rate")) lambda = number(argv[i], argv[i + 1]);
        else if (!strcmp(argv[i], "--service-rate")) mu = number(argv[i], argv[i + 1]);
        else if (!strcmp(argv[i], "--horizon")) horizon = number(argv[i], argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = number(argv[i], argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) { seed = strtoull(argv[i + 1], NULL, 10); have_seed = 1; }
        else { fprintf(stderr, "mm1: unknown option %s\n", argv[i]); return 2; }
    }
    if (lambda <= 0 || mu <= 0 || horizon <= 0 || warmup < 0 || !have_seed) {
        fprintf(stderr, "usage: mm1 --arrival-rate L --service-rate M --seed S --horizon T "
                        "[--warmup W] (L, M, T > 0)\n");
        return 2;
    }
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed);

    /* Lindley's recursion: customer n waits max(0, previous departure - its arrival). */
    const double end = warmup + horizon;
    double arrival = 0, departure = 0, busy = 0, wait_sum = 0, sojourn_sum = 0;
    long customers = 0, events = 0;
    for (;;) {
        arrival += exponential(lambda);
        if (arrival > end) break;
        double service = exponential(mu);
        double start = departure > arrival ? departure : arrival;
        departure = start + service;
        events += 2;
        /* Busy time inside the window, whoever it belongs to. */
        double lo = start > warmup ? start : warmup, hi = departure < end ? departure : end;
        if (hi > lo) busy += hi - lo;
        if (start > warmup) {  /* the waits of customers starting service in the window */
            wait_sum += start - arrival;
            sojourn_sum += departure - arrival;
            customers++;
        }
    }
    double n = customers ? (double)customers : NAN;
    printf("{\"mean_wait\": %.17g, \"mean_time_in_system\": %.17g, \"utilisation\": %.17g, "
           "\"customers\": %ld, \"events\": %ld}\n",
           customers ? wait_sum / n : 0.0, customers ? sojourn_sum / n : 0.0, busy / horizon,
           customers, events);
    return 0;
}
