/*
 * nullserver.c - a memcached text-protocol server that does nothing.
 *
 * Single thread, epoll.  Every request line gets a canned reply at once:
 *   get/gets k1 k2 ...   -> "END\r\n", or with -s N one
 *                           "VALUE <k> 0 N\r\n<N bytes>\r\n" per key then
 *                           "END\r\n" (so the generator parses realistic
 *                           replies, as if every key hit)
 *   set/add/replace/append/prepend/cas -> data block swallowed, "STORED\r\n"
 *   delete/incr/decr/touch -> "NOT_FOUND\r\n"
 *   version -> "VERSION 0.0-null\r\n", flush_all/verbosity -> "OK\r\n",
 *   stats -> "END\r\n", quit -> close, anything else -> "ERROR\r\n"
 * ("noreply" is honoured for storage and delete-like commands.)
 *
 * It stores nothing.  Benchmarked against it, the load generator shows its
 * own ceiling.  Exits on SIGINT/SIGTERM or after -T seconds (default 3600).
 *
 * Build: gcc -O2 -o bench/nullserver bench/nullserver.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IBUF_SIZE (256 * 1024)
#define MAX_LINE 8192
#define OUT_HIGH_WATER (8 * 1024 * 1024)
#define MAX_EVENTS 256

struct nconn {
    int fd;
    int events;
    char *in;
    size_t istart, iend;
    char *out;
    size_t olen, ooff, ocap;
    uint64_t swallow;   /* data bytes (+2) still to discard */
    int reply_pending;  /* send STORED once the data block is swallowed */
};

static int epfd;
static volatile sig_atomic_t stop;
static int value_size;
static char *value_block; /* value bytes + "\r\n" */
static char value_hdr_tail[32];
static size_t value_hdr_tail_len;

static void on_signal(int s) {
    (void)s;
    stop = 1;
}

static void die(const char *m) {
    perror(m);
    exit(1);
}

static void out_reserve(struct nconn *c, size_t n) {
    if (c->olen + n <= c->ocap) return;
    if (c->ooff) { /* compact first */
        memmove(c->out, c->out + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
        if (c->olen + n <= c->ocap) return;
    }
    size_t cap = c->ocap ? c->ocap : 16384;
    while (cap < c->olen + n) cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p) die("realloc");
    c->out = p;
    c->ocap = cap;
}

static inline void out_put(struct nconn *c, const void *p, size_t n) {
    out_reserve(c, n);
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
}
#define OUT_LIT(c, s) out_put((c), (s), sizeof(s) - 1)

static void close_conn(struct nconn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static void set_events(struct nconn *c, int ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = (uint32_t)ev, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl mod");
    c->events = ev;
}

/* Returns -1 if the connection was closed. */
static int flush_out(struct nconn *c) {
    while (c->ooff < c->olen) {
        ssize_t n = write(c->fd, c->out + c->ooff, c->olen - c->ooff);
        if (n > 0) {
            c->ooff += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            size_t pending = c->olen - c->ooff;
            set_events(c, pending > OUT_HIGH_WATER ? EPOLLOUT : (EPOLLIN | EPOLLOUT));
            return 0;
        } else {
            close_conn(c);
            return -1;
        }
    }
    c->ooff = c->olen = 0;
    set_events(c, EPOLLIN);
    return 0;
}

/* Split a line (without \r\n) into up to max tokens. */
static int tokenize(char *p, char *end, char **tok, size_t *tlen, int max) {
    int n = 0;
    while (p < end && n < max) {
        while (p < end && *p == ' ') p++;
        if (p >= end) break;
        char *s = p;
        while (p < end && *p != ' ') p++;
        tok[n] = s;
        tlen[n] = (size_t)(p - s);
        n++;
    }
    return n;
}

#define TOK_IS(i, lit) (tlen[i] == sizeof(lit) - 1 && memcmp(tok[i], lit, sizeof(lit) - 1) == 0)

/* Handle one command line; returns 1 if the connection should close. */
static int handle_line(struct nconn *c, char *p, char *end) {
    char *tok[260];
    size_t tlen[260];
    int n = tokenize(p, end, tok, tlen, 260);
    if (n == 0) {
        OUT_LIT(c, "ERROR\r\n");
        return 0;
    }
    if (TOK_IS(0, "get") || TOK_IS(0, "gets")) {
        int cas = tlen[0] == 4;
        if (value_size > 0) {
            for (int i = 1; i < n; i++) {
                out_reserve(c, 6 + tlen[i] + value_hdr_tail_len + 4 + (size_t)value_size + 2);
                OUT_LIT(c, "VALUE ");
                out_put(c, tok[i], tlen[i]);
                if (cas) {
                    out_put(c, value_hdr_tail, value_hdr_tail_len - 2);
                    OUT_LIT(c, " 1\r\n");
                } else {
                    out_put(c, value_hdr_tail, value_hdr_tail_len);
                }
                out_put(c, value_block, (size_t)value_size + 2);
            }
        }
        OUT_LIT(c, "END\r\n");
        return 0;
    }
    int is_cas = TOK_IS(0, "cas");
    if (TOK_IS(0, "set") || TOK_IS(0, "add") || TOK_IS(0, "replace") || TOK_IS(0, "append") ||
        TOK_IS(0, "prepend") || is_cas) {
        int need = is_cas ? 6 : 5;
        if (n < need) {
            OUT_LIT(c, "ERROR\r\n");
            return 0;
        }
        char *q = tok[4], *qe = tok[4] + tlen[4];
        uint64_t bytes = 0;
        if (q == qe) bytes = (uint64_t)-1;
        for (; q < qe; q++) {
            if (*q < '0' || *q > '9' || bytes > (1ULL << 32)) {
                bytes = (uint64_t)-1;
                break;
            }
            bytes = bytes * 10 + (uint64_t)(*q - '0');
        }
        if (bytes == (uint64_t)-1) {
            OUT_LIT(c, "CLIENT_ERROR bad command line format\r\n");
            return 0;
        }
        int noreply = n > need && TOK_IS(need, "noreply");
        c->swallow = bytes + 2;
        c->reply_pending = !noreply;
        return 0;
    }
    if (TOK_IS(0, "delete") || TOK_IS(0, "incr") || TOK_IS(0, "decr") || TOK_IS(0, "touch")) {
        if (!TOK_IS(n - 1, "noreply")) OUT_LIT(c, "NOT_FOUND\r\n");
        return 0;
    }
    if (TOK_IS(0, "version")) {
        OUT_LIT(c, "VERSION 0.0-null\r\n");
        return 0;
    }
    if (TOK_IS(0, "flush_all") || TOK_IS(0, "verbosity")) {
        if (!TOK_IS(n - 1, "noreply")) OUT_LIT(c, "OK\r\n");
        return 0;
    }
    if (TOK_IS(0, "stats")) {
        OUT_LIT(c, "END\r\n");
        return 0;
    }
    if (TOK_IS(0, "quit")) return 1;
    OUT_LIT(c, "ERROR\r\n");
    return 0;
}

static void on_readable(struct nconn *c) {
    if (c->iend == IBUF_SIZE) { /* compact */
        memmove(c->in, c->in + c->istart, c->iend - c->istart);
        c->iend -= c->istart;
        c->istart = 0;
    }
    ssize_t r = read(c->fd, c->in + c->iend, IBUF_SIZE - c->iend);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close_conn(c);
        return;
    }
    if (r < 0) return;
    c->iend += (size_t)r;

    char *p = c->in + c->istart, *end = c->in + c->iend;
    while (p < end) {
        if (c->swallow) {
            size_t avail = (size_t)(end - p);
            size_t k = c->swallow < avail ? (size_t)c->swallow : avail;
            p += k;
            c->swallow -= k;
            if (c->swallow == 0 && c->reply_pending) {
                OUT_LIT(c, "STORED\r\n");
                c->reply_pending = 0;
            }
            continue;
        }
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            if (end - p > MAX_LINE) {
                close_conn(c);
                return;
            }
            break;
        }
        char *le = (nl > p && nl[-1] == '\r') ? nl - 1 : nl;
        char *next = nl + 1;
        if (handle_line(c, p, le)) {
            if (flush_out(c) == 0) close_conn(c); /* best effort, then close */
            return;
        }
        p = next;
    }
    c->istart = (size_t)(p - c->in);
    if (c->istart == c->iend) c->istart = c->iend = 0;
    if (c->olen > c->ooff) flush_out(c);
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1";
    int port = 11311;
    double max_seconds = 3600;
    int o;
    while ((o = getopt(argc, argv, "l:p:s:T:h")) != -1) {
        switch (o) {
        case 'l': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': value_size = atoi(optarg); break;
        case 'T': max_seconds = atof(optarg); break;
        default:
            fprintf(stderr,
                    "usage: nullserver [-l addr] [-p port] [-s value_size_for_get_hits] "
                    "[-T max_seconds]\n");
            return o == 'h' ? 0 : 2;
        }
    }
    if (value_size < 0 || value_size > 1 << 20 || port <= 0 || port > 65535) {
        fprintf(stderr, "bad option\n");
        return 2;
    }
    value_block = malloc((size_t)value_size + 2);
    if (!value_block) die("malloc");
    for (int i = 0; i < value_size; i++) value_block[i] = (char)('a' + i % 26);
    value_block[value_size] = '\r';
    value_block[value_size + 1] = '\n';
    value_hdr_tail_len =
        (size_t)snprintf(value_hdr_tail, sizeof(value_hdr_tail), " 0 %d\r\n", value_size);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", addr);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");

    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct epoll_event evs[MAX_EVENTS];
    while (!stop) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > max_seconds) break;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 500);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct nconn *c = evs[i].data.ptr;
            if (c == NULL) { /* listener */
                for (int k = 0; k < 1024; k++) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct nconn *nc = calloc(1, sizeof(*nc));
                    if (!nc) die("calloc");
                    nc->in = malloc(IBUF_SIZE);
                    if (!nc->in) die("malloc");
                    nc->fd = fd;
                    nc->events = EPOLLIN;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl add");
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (flush_out(c) < 0) continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
    }
    close(lfd);
    close(epfd);
    return 0;
}
