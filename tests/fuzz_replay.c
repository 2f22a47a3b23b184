/* fuzz_replay: the libFuzzer targets tests/fuzz_<target>.c, built with the normal compiler (each
   with UTG_STATIC, UTG_FUZZ_REPLAY and its LLVMFuzzerTestOneInput renamed utg_fuzz_<target>), fed
   every file of a corpus folder. It is the regression suite of the fuzzers: tests/corpus/<target>/
   holds the seeds and the inputs they found worth keeping.

   usage: fuzz_replay [CORPUS_DIR [TARGET]]   replay every file of CORPUS_DIR/<target>/ (default tests/corpus)
          fuzz_replay --seeds DIR [TARGET]      write each target's seeds into DIR/<target>/ (which
                                                must exist; the artifact seeds come from mk_artifact
                                                and test_artifact_mut, the config seeds also from the
                                                recipes: see the Makefile's fuzz rule)
   Each target replays in a child process, so an input that aborts (a broken invariant) or crashes
   fails its target, names the file, and leaves the others to run. Prints one ok/FAIL line per
   target and "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int utg_fuzz_artifact(const uint8_t *data, size_t size);
int utg_fuzz_spm(const uint8_t *data, size_t size);
int utg_fuzz_safetensors(const uint8_t *data, size_t size);
int utg_fuzz_shard(const uint8_t *data, size_t size);
int utg_fuzz_checkpoint(const uint8_t *data, size_t size);
int utg_fuzz_config(const uint8_t *data, size_t size);
int utg_fuzz_spm_seeds(const char *dir);
int utg_fuzz_safetensors_seeds(const char *dir);
int utg_fuzz_shard_seeds(const char *dir);
int utg_fuzz_checkpoint_seeds(const char *dir);
int utg_fuzz_config_seeds(const char *dir);
#ifdef _OPENMP
void omp_set_num_threads(int n); /* (omp.h's declaration) */
#endif

static const struct {
    const char *name;
    int (*one)(const uint8_t *, size_t);
    int (*seeds)(const char *);
} targets[] = {
    {"artifact", utg_fuzz_artifact, NULL},
    {"spm", utg_fuzz_spm, utg_fuzz_spm_seeds},
    {"safetensors", utg_fuzz_safetensors, utg_fuzz_safetensors_seeds},
    {"shard", utg_fuzz_shard, utg_fuzz_shard_seeds},
    {"checkpoint", utg_fuzz_checkpoint, utg_fuzz_checkpoint_seeds},
    {"config", utg_fuzz_config, utg_fuzz_config_seeds},
};
#define N_TARGETS ((int)(sizeof targets / sizeof targets[0]))

static char g_current[2048]; /* the input being replayed, for the signal handler */

static void on_signal(int sig) {
    static const char pre[] = "    died on ";
    ssize_t w;
    w = write(1, pre, sizeof pre - 1);
    w = write(1, g_current, strlen(g_current));
    w = write(1, "\n", 1);
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* the sorted file names of dir (NULL if it cannot be read) */
static char **list_files(const char *dir, int *count) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    int n = 0, cap = 0;
    *count = 0;
    if (!d) return NULL;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            char **nn = (char **)realloc(names, sizeof(char *) * (size_t)(cap = cap * 2 + 16));
            if (!nn) break;
            names = nn;
        }
        names[n] = (char *)malloc(strlen(e->d_name) + 1);
        if (!names[n]) break;
        strcpy(names[n++], e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(char *), cmp_names);
    *count = n;
    return names ? names : (char **)calloc(1, sizeof(char *));
}

static int read_all(const char *path, uint8_t **out, size_t *size) {
    FILE *f = fopen(path, "rb");
    uint8_t *b = NULL;
    size_t n = 0, cap = 0, got;
    if (!f) return 0;
    do {
        if (n == cap) {
            uint8_t *nb = (uint8_t *)realloc(b, cap = cap * 2 + 65536);
            if (!nb) { free(b); fclose(f); return 0; }
            b = nb;
        }
        got = fread(b + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *out = b; /* never NULL, even for an empty file: libFuzzer passes a valid pointer too */
    *size = n;
    return 1;
}

/* child: every file through the target; exit status 0 when all return */
static int replay_child(int t, const char *dir, char **names, int n) {
    int i;
#ifdef _OPENMP
    omp_set_num_threads(1); /* tiny models: threads only wait on each other, the more so on a busy machine */
#endif
    signal(SIGABRT, on_signal);
    signal(SIGSEGV, on_signal);
    signal(SIGBUS, on_signal);
    signal(SIGFPE, on_signal);
    signal(SIGILL, on_signal);
    for (i = 0; i < n; i++) {
        uint8_t *b;
        size_t size;
        snprintf(g_current, sizeof g_current, "%s/%s", dir, names[i]);
        if (!read_all(g_current, &b, &size)) {
            printf("    cannot read %s\n", g_current);
            return 1;
        }
        targets[t].one(b, size);
        free(b);
    }
    return 0;
}

static int replay(int t, const char *corpus) {
    char dir[1024];
    char **names;
    int n = 0, status = 0, i;
    pid_t pid;
    snprintf(dir, sizeof dir, "%s/%s", corpus, targets[t].name);
    names = list_files(dir, &n);
    if (!names || n == 0) {
        printf("FAIL  %s: no inputs in %s\n", targets[t].name, dir);
        free(names);
        return 0;
    }
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        int r = replay_child(t, dir, names, n);
        fflush(stdout);
        exit(r); /* atexit handlers run: the checkpoint target removes its temp directory */
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) status = -1;
    for (i = 0; i < n; i++) free(names[i]);
    free(names);
    if (status == 0) {
        printf("ok    %s: %d inputs\n", targets[t].name, n);
        return 1;
    }
    if (status != -1 && WIFSIGNALED(status)) printf("FAIL  %s: signal %d\n", targets[t].name, WTERMSIG(status));
    else printf("FAIL  %s: exit status %d\n", targets[t].name, status == -1 ? -1 : WEXITSTATUS(status));
    return 0;
}

int main(int argc, char **argv) {
    const char *corpus = "tests/corpus", *only = NULL;
    int t, passed = 0, failed = 0, seeds = 0;
    if (argc > 1 && !strcmp(argv[1], "--seeds")) {
        if (argc < 3) { fprintf(stderr, "usage: fuzz_replay --seeds DIR [TARGET]\n"); return 2; }
        seeds = 1;
        corpus = argv[2];
        only = argc > 3 ? argv[3] : NULL;
    } else {
        if (argc > 1) corpus = argv[1];
        if (argc > 2) only = argv[2];
    }
    for (t = 0; t < N_TARGETS; t++) {
        if (only && strcmp(only, targets[t].name)) continue;
        if (seeds) {
            char dir[1024];
            if (!targets[t].seeds) continue;
            snprintf(dir, sizeof dir, "%s/%s", corpus, targets[t].name);
            if (targets[t].seeds(dir) != 0) { fprintf(stderr, "fuzz_replay: seeds for %s failed\n", targets[t].name); return 1; }
            continue;
        }
        if (replay(t, corpus)) passed++;
        else failed++;
        fflush(stdout);
    }
    if (seeds) return 0;
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
