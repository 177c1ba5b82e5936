/* stopslow: an idle service that needs 1 s to stop.
 *
 *   stopslow TAG        (TAG only makes the cmdline unique for /proc matching)
 *
 * On SIGTERM (or SIGINT) it sleeps 1 s, then exits 0. Otherwise it sleeps forever.
 */
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigset_t block, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &block, NULL); /* no lost wakeup between test and wait */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!stop) sigsuspend(&empty);
    struct timespec one = {1, 0};
    while (nanosleep(&one, &one) != 0) {}
    return 0;
}
