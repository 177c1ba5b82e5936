/* flood: write N unique-numbered 100-byte lines to stdout as fast as possible.
 *
 *   flood TIMEFILE N [linger]
 *
 * TIMEFILE comes first so that argv[1] is unique per run (bench/procwatch matches it).
 * Line i (0-based) is "FLOOD#%010d " followed by 'x' padding to 99 bytes, then '\n'.
 * stdout is fully buffered (64 KiB). The wall time from the first write to the
 * final fflush (CLOCK_MONOTONIC) is written to TIMEFILE (not to stdout/stderr,
 * which may be captured by the supervisor under test). With "linger" the program
 * then blocks in pause() so a supervisor's restart policy does not re-run it.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE 100

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: flood TIMEFILE N [linger]\n");
        return 2;
    }
    long n = atol(argv[2]);
    static char buf[1 << 16];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    char line[LINE + 1];
    memset(line, 'x', LINE);
    line[LINE - 1] = '\n';
    line[LINE] = 0;

    double t0 = mono();
    for (long i = 0; i < n; i++) {
        char head[32];
        int h = snprintf(head, sizeof head, "FLOOD#%010ld ", i);
        memcpy(line, head, h);
        if (fwrite(line, 1, LINE, stdout) != LINE) { perror("fwrite"); return 1; }
    }
    if (fflush(stdout) != 0) { perror("fflush"); return 1; }
    double t1 = mono();

    FILE *tf = fopen(argv[1], "w");
    if (!tf) { perror(argv[1]); return 1; }
    fprintf(tf, "%.6f\n", t1 - t0);
    fclose(tf);
    if (argc > 3 && !strcmp(argv[3], "linger"))
        for (;;) pause();
    return 0;
}
