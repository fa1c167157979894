/*
 * SSE load client for the benchmarks: epoll, raw sockets, minimal parsing.
 *
 *   loadclient HOST PORT NCONN PATH_TEMPLATE NCHANNELS SAMPLE_EVERY [OFFSET]
 *
 * Opens NCONN HTTP/1.1 connections; connection i requests PATH_TEMPLATE with "%d" replaced
 * by (OFFSET + i) % NCHANNELS. Prints "ready <ms> <bad>" once every response head has arrived,
 * <bad> being the number of heads whose status line was not "HTTP/1.1 200". Then counts
 * events ("data: <publish time in ns>...") and samples one latency in SAMPLE_EVERY
 * (CLOCK_REALTIME now - publish time). Commands on stdin, one per line:
 *   r   print "count <events> <samples>" then one latency (ns) per line, and reset
 *   q   exit
 * The point is to cost far less CPU per event than the gateway under test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TAIL 40
#define BUF (1 << 18)

struct conn {
    int fd;
    int head_done;
    int nstatus;   /* bytes of the status line seen so far, up to 12 */
    char status[12];
    int taillen;
    char tail[TAIL];
    char head[4];  /* last bytes seen while looking for the end of the head */
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static uint64_t events, seen;
static int64_t *samples;
static size_t nsamples, capsamples;
static int sample_every;

static void record(int64_t ts, int64_t now) {
    events++;
    if (++seen % sample_every == 0) {
        if (nsamples == capsamples) {
            capsamples = capsamples ? capsamples * 2 : 4096;
            samples = realloc(samples, capsamples * sizeof *samples);
        }
        samples[nsamples++] = now - ts;
    }
}

/* Scan tail+data for complete "data: <digits><non-digit>" matches ending in the new part. */
static void scan(struct conn *c, const char *data, size_t len, int64_t now) {
    static char buf[BUF + TAIL];
    memcpy(buf, c->tail, c->taillen);
    memcpy(buf + c->taillen, data, len);
    size_t total = c->taillen + len;
    const char *p = buf, *end = buf + total;
    while ((p = memmem(p, end - p, "data: ", 6)) != NULL) {
        const char *d = p + 6;
        int64_t ts = 0;
        while (d < end && *d >= '0' && *d <= '9') ts = ts * 10 + (*d++ - '0');
        if (d == end) break;                                 /* incomplete: kept in the tail */
        if (d > p + 6 && (size_t)(d - buf) >= (size_t)c->taillen) record(ts, now);
        p = d;
    }
    size_t keep = total < TAIL ? total : TAIL;
    memmove(c->tail, buf + total - keep, keep);
    c->taillen = (int)keep;
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT NCONN PATH_TEMPLATE NCHANNELS SAMPLE_EVERY [OFFSET]\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), n = atoi(argv[3]), nchannels = atoi(argv[5]);
    const char *tmpl = argv[4];
    sample_every = atoi(argv[6]);
    int offset = argc == 8 ? atoi(argv[7]) : 0;
    if (sample_every < 1) sample_every = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int ep = epoll_create1(0);
    struct conn *conns = calloc(n, sizeof *conns);
    int64_t t0 = mono_ms();
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("connect");
            return 1;
        }
        char path[256], req[512];
        snprintf(path, sizeof path, tmpl, (offset + i) % nchannels);
        int rl = snprintf(req, sizeof req,
                          "GET %s HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n", path);
        if (write(fd, req, rl) != rl) {
            perror("write");
            return 1;
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    struct epoll_event sin = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sin);
    static char buf[BUF];
    struct epoll_event evs[512];
    int heads = 0, bad = 0, ready_printed = 0;
    for (;;) {
        if (!ready_printed && heads == n) {
            printf("ready %lld %d\n", (long long)(mono_ms() - t0), bad);
            fflush(stdout);
            ready_printed = 1;
        }
        int k = epoll_wait(ep, evs, 512, 100);
        int64_t now = now_ns();
        for (int e = 0; e < k; e++) {
            struct conn *c = evs[e].data.ptr;
            if (c == NULL) {
                char cmd[64];
                ssize_t r = read(0, cmd, sizeof cmd);
                if (r <= 0 || cmd[0] == 'q') return 0;
                if (cmd[0] == 'r') {
                    printf("count %llu %zu\n", (unsigned long long)events, nsamples);
                    for (size_t i = 0; i < nsamples; i++) printf("%lld\n", (long long)samples[i]);
                    fflush(stdout);
                    events = 0;
                    nsamples = 0;
                }
                continue;
            }
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                if (!c->head_done) {  /* closed before a whole head: counted, as bad */
                    c->head_done = 1;
                    heads++;
                    bad++;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                continue;
            }
            const char *data = buf;
            size_t len = (size_t)r;
            if (!c->head_done && c->nstatus < 12) {
                size_t take = len < (size_t)(12 - c->nstatus) ? len : (size_t)(12 - c->nstatus);
                memcpy(c->status + c->nstatus, buf, take);
                c->nstatus += (int)take;
                if (c->nstatus == 12 && memcmp(c->status, "HTTP/1.1 200", 12) != 0) {
                    if (bad++ == 0)  /* the first one tells what went wrong */
                        fprintf(stderr, "loadclient: a response began %.*s\n", (int)len, buf);
                }
            }
            if (!c->head_done) {
                /* find "\r\n\r\n", possibly split across reads */
                char probe[BUF + 4];
                memcpy(probe, c->head, 4);
                memcpy(probe + 4, buf, len);
                char *h = memmem(probe, len + 4, "\r\n\r\n", 4);
                if (h == NULL) {
                    memcpy(c->head, probe + len, 4);
                    continue;
                }
                c->head_done = 1;
                heads++;
                size_t skip = (size_t)(h + 4 - probe) - 4;
                data = buf + skip;
                len -= skip;
            }
            if (len) scan(c, data, len, now);
        }
    }
}
