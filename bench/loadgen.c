/*
 * loadgen.c - closed-loop memcached text-protocol load generator.
 *
 * Single thread, epoll, non-blocking sockets.  Every connection keeps
 * `depth` requests in flight; as soon as a reply is complete another
 * request is sent on that connection.  Replies are parsed properly
 * (VALUE blocks are skipped by their byte count, so values may contain
 * anything, and replies may be split across reads at any byte), which
 * is how the generator knows when each request is complete.
 *
 * Latency is measured per request from the moment it is queued for
 * sending (immediately followed by write()) until the read() that
 * completed its reply, using CLOCK_MONOTONIC, and recorded in a
 * log-linear histogram (64 sub-buckets per power of two, < 1.6 % error).
 *
 * Output: progress markers on stdout ("# measure-start", "# measure-end")
 * followed by one JSON line with the results.
 *
 * Build: gcc -O2 -o bench/loadgen bench/loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE (256 * 1024)
#define MAX_EVENTS 256
#define MAX_CONNS 10000
#define MAX_DEPTH 4096
#define MAX_MGET 1024

/* ---------------------------------------------------------------- */
/* histogram                                                         */

#define SUB_BITS 7
#define SUB_HALF (1u << (SUB_BITS - 1)) /* 64 */
#define MAX_HBIT 46                     /* values up to 2^47 ns (~39 h) */
#define NBUCKETS ((MAX_HBIT - SUB_BITS + 3) * SUB_HALF)

static uint64_t hist[NBUCKETS];
static uint64_t hist_total;
static uint64_t hist_sum_ns;
static uint64_t hist_max_ns;

static inline unsigned bucket_of(uint64_t v) {
    if (v < (1u << SUB_BITS)) return (unsigned)v;
    int h = 63 - __builtin_clzll(v);
    if (h > MAX_HBIT) return NBUCKETS - 1;
    uint64_t top = v >> (h - SUB_BITS + 1); /* in [64, 128) */
    return (unsigned)((h - SUB_BITS + 2) * SUB_HALF + (top - SUB_HALF));
}

static uint64_t bucket_lo(unsigned idx) {
    if (idx < (1u << SUB_BITS)) return idx;
    unsigned g = idx / SUB_HALF, off = idx % SUB_HALF;
    return (uint64_t)(SUB_HALF + off) << (g - 1);
}

static inline void hist_add(uint64_t ns) {
    hist[bucket_of(ns)]++;
    hist_total++;
    hist_sum_ns += ns;
    if (ns > hist_max_ns) hist_max_ns = ns;
}

/* Representative value (midpoint) of the bucket holding quantile q. */
static double hist_quantile_us(double q) {
    if (hist_total == 0) return 0.0;
    double want = q * (double)hist_total;
    uint64_t target = (uint64_t)want;
    if ((double)target < want) target++; /* ceil without libm */
    if (target < 1) target = 1;
    uint64_t cum = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        cum += hist[i];
        if (cum >= target) {
            uint64_t lo = bucket_lo(i);
            uint64_t hi = (i + 1 < NBUCKETS) ? bucket_lo(i + 1) - 1 : lo;
            double mid = ((double)lo + (double)hi) / 2.0;
            if ((double)hist_max_ns < mid) mid = (double)hist_max_ns;
            return mid / 1000.0;
        }
    }
    return (double)hist_max_ns / 1000.0;
}

/* ---------------------------------------------------------------- */
/* configuration and global state                                    */

enum { WL_MIX, WL_MULTIGET, WL_SET, WL_GET };
static const char *wl_names[] = {"mix", "multiget", "set", "get"};
enum { REQ_GET = 0, REQ_SET = 1, REQ_MGET = 2 };
enum { PH_PRELOAD, PH_WARMUP, PH_MEASURE, PH_STOP };

static const char *opt_host = "127.0.0.1";
static const char *opt_port = "11211";
static int opt_conns = 50;
static int opt_depth = 1;
static double opt_duration = 10.0;
static double opt_warmup = 1.0;
static int opt_keys = 10000;
static int opt_value_size = 100;
static int opt_workload = WL_MIX;
static int opt_preload = 0;
static int opt_mget = 16;
static double opt_set_ratio = 0.10;
static uint64_t opt_seed = 0x9e3779b97f4a7c15ULL;
static double opt_preload_timeout = 120.0;

static int phase;
static volatile sig_atomic_t got_signal;

/* statistics (reset at the start of the measurement) */
static uint64_t st_ops, st_gets, st_sets, st_mgets;
static uint64_t st_keys_requested, st_hits;
static uint64_t st_err_replies;   /* ERROR / CLIENT_ERROR / SERVER_ERROR / ... */
static uint64_t st_proto_errors;  /* reply did not match the request */
static uint64_t st_conn_errors;   /* connection closed / reset */
static uint64_t st_preload_done, st_preload_errors;
static uint64_t st_reads, st_writes, st_wakeups; /* syscalls / epoll_wait returns */
static int preload_next;

/* key strings "key:<n>" */
static char **key_str;
static uint8_t *key_len;

/* set request tail: " 0 0 <size>\r\n" and "<payload>\r\n" */
static char set_hdr_tail[64];
static size_t set_hdr_tail_len;
static char *set_payload; /* value bytes + "\r\n" */
static size_t set_payload_len;

static uint64_t rng_state;
static inline uint64_t rng_next(void) { /* xorshift64* */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static inline int rand_key(void) {
    return (int)(((rng_next() >> 32) * (uint64_t)opt_keys) >> 32);
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- */
/* connections                                                       */

struct conn {
    int fd;
    int dead;
    int want_out;
    /* write buffer */
    char *wbuf;
    size_t wlen, woff, wcap;
    /* read buffer */
    char *rbuf;
    size_t rstart, rend;
    /* reply parser */
    uint64_t skip;     /* value bytes still to skip */
    int expect_crlf;   /* after a value block: next line must be "\r\n" */
    uint32_t values;   /* VALUE blocks seen in the current reply */
    /* in-flight ring */
    uint64_t *ts;
    uint8_t *type;
    uint16_t *nkeys;
    uint32_t head, count;
};

static struct conn *conns;
static int epfd;
static int live_conns;

static void die(const char *msg) {
    perror(msg);
    exit(2);
}

static void conn_kill(struct conn *c) {
    if (c->dead) return;
    c->dead = 1;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    live_conns--;
    if (phase != PH_STOP) st_conn_errors++;
}

static void wbuf_reserve(struct conn *c, size_t extra) {
    if (c->wlen + extra <= c->wcap) return;
    size_t ncap = c->wcap ? c->wcap : 4096;
    while (ncap < c->wlen + extra) ncap *= 2;
    char *n = realloc(c->wbuf, ncap);
    if (!n) die("realloc");
    c->wbuf = n;
    c->wcap = ncap;
}

static inline void wput(struct conn *c, const void *p, size_t n) {
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

static void append_set(struct conn *c, int k) {
    wbuf_reserve(c, 4 + key_len[k] + set_hdr_tail_len + set_payload_len);
    wput(c, "set ", 4);
    wput(c, key_str[k], key_len[k]);
    wput(c, set_hdr_tail, set_hdr_tail_len);
    wput(c, set_payload, set_payload_len);
}

static void append_get(struct conn *c, int nk) {
    wbuf_reserve(c, 3 + (size_t)nk * 16 + 2);
    wput(c, "get", 3);
    for (int i = 0; i < nk; i++) {
        int k = rand_key();
        c->wbuf[c->wlen++] = ' ';
        wput(c, key_str[k], key_len[k]);
    }
    wput(c, "\r\n", 2);
}

/* Queue one request if the current phase wants one; returns 0 if not. */
static int gen_request(struct conn *c, uint64_t t) {
    uint8_t ty;
    uint16_t nk = 1;
    if (phase == PH_STOP) return 0;
    if (phase == PH_PRELOAD) {
        if (preload_next >= opt_keys) return 0;
        append_set(c, preload_next++);
        ty = REQ_SET;
    } else {
        switch (opt_workload) {
        case WL_MIX:
            if ((double)(rng_next() >> 11) * (1.0 / 9007199254740992.0) < opt_set_ratio) {
                append_set(c, rand_key());
                ty = REQ_SET;
            } else {
                append_get(c, 1);
                ty = REQ_GET;
            }
            break;
        case WL_MULTIGET:
            append_get(c, opt_mget);
            ty = REQ_MGET;
            nk = (uint16_t)opt_mget;
            break;
        case WL_SET:
            append_set(c, rand_key());
            ty = REQ_SET;
            break;
        default: /* WL_GET */
            append_get(c, 1);
            ty = REQ_GET;
            break;
        }
    }
    uint32_t slot = (c->head + c->count) % (uint32_t)opt_depth;
    c->ts[slot] = t;
    c->type[slot] = ty;
    c->nkeys[slot] = nk;
    c->count++;
    return 1;
}

static void set_events(struct conn *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = want_out;
}

static void flush(struct conn *c) {
    while (c->woff < c->wlen) {
        ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        st_writes++;
        if (n > 0) {
            c->woff += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, 1);
            return;
        } else {
            conn_kill(c);
            return;
        }
    }
    c->woff = c->wlen = 0;
    set_events(c, 0);
}

static void fill(struct conn *c, uint64_t t) {
    if (c->dead) return;
    while (c->count < (uint32_t)opt_depth && gen_request(c, t)) {
    }
    if (c->wlen > c->woff) flush(c);
}

/* A top-level reply line finished the request at the head of the ring. */
enum { R_END, R_STORED, R_OTHER };

static void complete(struct conn *c, int kind, uint64_t t) {
    if (c->count == 0) { /* unsolicited reply */
        st_proto_errors++;
        conn_kill(c);
        return;
    }
    uint32_t h = c->head;
    uint8_t ty = c->type[h];
    uint64_t sent = c->ts[h];
    uint16_t nk = c->nkeys[h];
    c->head = (h + 1) % (uint32_t)opt_depth;
    c->count--;
    uint32_t values = c->values;
    c->values = 0;

    int ok;
    if (kind == R_OTHER) ok = 0;
    else if (ty == REQ_SET) ok = (kind == R_STORED);
    else ok = (kind == R_END);

    if (phase == PH_PRELOAD) {
        st_preload_done++;
        if (!ok) st_preload_errors++;
        return;
    }
    if (phase != PH_MEASURE) return;
    st_ops++;
    hist_add(t > sent ? t - sent : 0);
    if (ty == REQ_SET) st_sets++;
    else if (ty == REQ_GET) st_gets++;
    else st_mgets++;
    if (ty != REQ_SET) {
        st_keys_requested += nk;
        st_hits += values;
    }
    if (!ok) {
        if (kind == R_OTHER) st_err_replies++;
        else st_proto_errors++;
    }
}

static int parse_u64(const char *p, const char *end, uint64_t *out, const char **after) {
    uint64_t v = 0;
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p == s) return -1;
    *out = v;
    *after = p;
    return 0;
}

/* Parse "VALUE <key> <flags> <bytes>[ <cas>]\r\n"; returns bytes or -1. */
static int64_t parse_value_line(const char *p, const char *nl) {
    const char *q = p + 6; /* after "VALUE " */
    /* key */
    while (q < nl && *q != ' ') q++;
    if (q >= nl) return -1;
    q++;
    uint64_t flags, bytes;
    if (parse_u64(q, nl, &flags, &q) < 0 || q >= nl || *q != ' ') return -1;
    q++;
    if (parse_u64(q, nl, &bytes, &q) < 0) return -1;
    if (bytes > (1ULL << 40)) return -1;
    return (int64_t)bytes;
}

/* Consume as many complete reply elements as are buffered. */
static void parse_replies(struct conn *c, uint64_t t) {
    char *p = c->rbuf + c->rstart;
    char *end = c->rbuf + c->rend;
    while (p < end && !c->dead) {
        if (c->skip) {
            size_t avail = (size_t)(end - p);
            size_t n = c->skip < avail ? (size_t)c->skip : avail;
            p += n;
            c->skip -= n;
            continue;
        }
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        size_t len = (size_t)(nl - p) + 1;
        if (len < 2 || nl[-1] != '\r') {
            st_proto_errors++;
            conn_kill(c);
            return;
        }
        if (c->expect_crlf) {
            c->expect_crlf = 0;
            if (len != 2) { /* data block length mismatch */
                st_proto_errors++;
                conn_kill(c);
                return;
            }
        } else if (len == 5 && memcmp(p, "END\r\n", 5) == 0) {
            complete(c, R_END, t);
        } else if (len == 8 && memcmp(p, "STORED\r\n", 8) == 0) {
            complete(c, R_STORED, t);
        } else if (len > 6 && memcmp(p, "VALUE ", 6) == 0) {
            int64_t bytes = parse_value_line(p, nl);
            if (bytes < 0 || c->count == 0 || c->type[c->head] == REQ_SET) {
                st_proto_errors++;
                conn_kill(c);
                return;
            }
            c->values++;
            c->skip = (uint64_t)bytes;
            c->expect_crlf = 1;
        } else {
            /* ERROR, CLIENT_ERROR ..., SERVER_ERROR ..., NOT_STORED, ... */
            complete(c, R_OTHER, t);
        }
        p = nl + 1;
    }
    if (c->dead) return;
    c->rstart = (size_t)(p - c->rbuf);
    if (c->rstart == c->rend) {
        c->rstart = c->rend = 0;
    } else if (c->rend == RBUF_SIZE) {
        if (c->rstart == 0) { /* a single line larger than the buffer */
            st_proto_errors++;
            conn_kill(c);
            return;
        }
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
}

static void on_readable(struct conn *c) {
    ssize_t n = read(c->fd, c->rbuf + c->rend, RBUF_SIZE - c->rend);
    st_reads++;
    if (n == 0) {
        conn_kill(c);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        conn_kill(c);
        return;
    }
    uint64_t t = now_ns();
    c->rend += (size_t)n;
    parse_replies(c, t);
    fill(c, t);
}

/* ---------------------------------------------------------------- */

static void open_conns(void) {
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(opt_host, opt_port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "getaddrinfo %s:%s: %s\n", opt_host, opt_port, gai_strerror(rc));
        exit(2);
    }
    conns = calloc((size_t)opt_conns, sizeof(*conns));
    if (!conns) die("calloc");
    for (int i = 0; i < opt_conns; i++) {
        struct conn *c = &conns[i];
        int fd = socket(res->ai_family, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
            fprintf(stderr, "connect %s:%s: %s\n", opt_host, opt_port, strerror(errno));
            exit(2);
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        c->fd = fd;
        c->rbuf = malloc(RBUF_SIZE);
        c->ts = calloc((size_t)opt_depth, sizeof(uint64_t));
        c->type = calloc((size_t)opt_depth, 1);
        c->nkeys = calloc((size_t)opt_depth, sizeof(uint16_t));
        if (!c->rbuf || !c->ts || !c->type || !c->nkeys) die("malloc");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    }
    live_conns = opt_conns;
    freeaddrinfo(res);
}

static void reset_stats(void) {
    memset(hist, 0, sizeof(hist));
    hist_total = hist_sum_ns = hist_max_ns = 0;
    st_ops = st_gets = st_sets = st_mgets = 0;
    st_keys_requested = st_hits = 0;
    st_err_replies = st_proto_errors = 0;
    st_reads = st_writes = st_wakeups = 0;
    /* st_conn_errors is not reset: a connection lost at any time is an error */
}

static void fill_all(uint64_t t) {
    for (int i = 0; i < opt_conns; i++) fill(&conns[i], t);
}

static int all_idle(void) {
    for (int i = 0; i < opt_conns; i++)
        if (!conns[i].dead && conns[i].count) return 0;
    return 1;
}

/* Run the event loop until `until` (ns), or for the preload phase until
 * every key was stored.  Returns the time the loop stopped. */
static uint64_t run_loop(uint64_t until) {
    struct epoll_event evs[MAX_EVENTS];
    uint64_t t = now_ns();
    while (!got_signal && live_conns > 0 && t < until) {
        if (phase == PH_PRELOAD && preload_next >= opt_keys && all_idle()) break;
        int64_t left_ms = (int64_t)((until - t) / 1000000ULL) + 1;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, left_ms > 100 ? 100 : (int)left_ms);
        st_wakeups++;
        if (n < 0) {
            if (errno == EINTR) {
                t = now_ns();
                continue;
            }
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->dead) continue;
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                /* drain whatever is readable first */
                if (evs[i].events & EPOLLIN) on_readable(c);
                conn_kill(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT) flush(c);
            if (!c->dead && (evs[i].events & EPOLLIN)) on_readable(c);
        }
        t = now_ns();
    }
    return t;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void on_signal(int sig) {
    (void)sig;
    got_signal = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: loadgen [options]\n"
            "  -H, --host HOST          server host (127.0.0.1)\n"
            "  -p, --port PORT          server port (11211)\n"
            "  -c, --conns N            connections (50)\n"
            "  -d, --depth N            requests in flight per connection (1)\n"
            "  -t, --duration SEC       measurement duration (10)\n"
            "  -w, --warmup SEC         warmup before measuring (1)\n"
            "  -k, --keys N             key space key:0 .. key:N-1 (10000)\n"
            "  -s, --value-size BYTES   value size for sets (100)\n"
            "  -W, --workload NAME      mix | multiget | set | get (mix)\n"
            "  -m, --mget-keys N        keys per multiget request (16)\n"
            "  -r, --set-ratio F        fraction of sets in mix (0.10)\n"
            "  -P, --preload            set every key once before warmup\n"
            "      --preload-timeout S  give up preloading after S seconds (120)\n"
            "  -S, --seed N             random seed\n"
            "  -h, --help\n");
}

int main(int argc, char **argv) {
    static struct option lopts[] = {
        {"host", required_argument, 0, 'H'},      {"port", required_argument, 0, 'p'},
        {"conns", required_argument, 0, 'c'},     {"depth", required_argument, 0, 'd'},
        {"duration", required_argument, 0, 't'},  {"warmup", required_argument, 0, 'w'},
        {"keys", required_argument, 0, 'k'},      {"value-size", required_argument, 0, 's'},
        {"workload", required_argument, 0, 'W'},  {"mget-keys", required_argument, 0, 'm'},
        {"set-ratio", required_argument, 0, 'r'}, {"preload", no_argument, 0, 'P'},
        {"preload-timeout", required_argument, 0, 1000},
        {"seed", required_argument, 0, 'S'},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "H:p:c:d:t:w:k:s:W:m:r:PS:h", lopts, NULL)) != -1) {
        switch (o) {
        case 'H': opt_host = optarg; break;
        case 'p': opt_port = optarg; break;
        case 'c': opt_conns = atoi(optarg); break;
        case 'd': opt_depth = atoi(optarg); break;
        case 't': opt_duration = atof(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'k': opt_keys = atoi(optarg); break;
        case 's': opt_value_size = atoi(optarg); break;
        case 'W': {
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, wl_names[i]) == 0) found = i;
            if (found < 0) {
                fprintf(stderr, "unknown workload %s\n", optarg);
                return 2;
            }
            opt_workload = found;
            break;
        }
        case 'm': opt_mget = atoi(optarg); break;
        case 'r': opt_set_ratio = atof(optarg); break;
        case 'P': opt_preload = 1; break;
        case 1000: opt_preload_timeout = atof(optarg); break;
        case 'S': opt_seed = strtoull(optarg, NULL, 0); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (opt_conns < 1 || opt_conns > MAX_CONNS || opt_depth < 1 || opt_depth > MAX_DEPTH ||
        opt_keys < 1 || opt_keys > 100000000 || opt_value_size < 0 || opt_mget < 1 ||
        opt_mget > MAX_MGET || !(opt_duration > 0) || opt_duration > 86400 || opt_warmup < 0 ||
        opt_warmup > 86400 || opt_set_ratio < 0 || opt_set_ratio > 1) {
        fprintf(stderr, "invalid option value\n");
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    rng_state = opt_seed ? opt_seed : 1;

    key_str = malloc(sizeof(char *) * (size_t)opt_keys);
    key_len = malloc((size_t)opt_keys);
    if (!key_str || !key_len) die("malloc");
    for (int i = 0; i < opt_keys; i++) {
        char tmp[32];
        int n = snprintf(tmp, sizeof(tmp), "key:%d", i);
        key_str[i] = strdup(tmp);
        key_len[i] = (uint8_t)n;
    }
    set_hdr_tail_len = (size_t)snprintf(set_hdr_tail, sizeof(set_hdr_tail), " 0 0 %d\r\n",
                                        opt_value_size);
    set_payload_len = (size_t)opt_value_size + 2;
    set_payload = malloc(set_payload_len);
    if (!set_payload) die("malloc");
    for (int i = 0; i < opt_value_size; i++) set_payload[i] = (char)('a' + i % 26);
    set_payload[opt_value_size] = '\r';
    set_payload[opt_value_size + 1] = '\n';

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    open_conns();

    double preload_s = 0.0;
    uint64_t preload_missing = 0;
    if (opt_preload) {
        phase = PH_PRELOAD;
        uint64_t t0 = now_ns();
        fill_all(t0);
        uint64_t t1 = run_loop(t0 + (uint64_t)(opt_preload_timeout * 1e9));
        preload_s = (double)(t1 - t0) / 1e9;
        if (st_preload_done < (uint64_t)opt_keys)
            preload_missing = (uint64_t)opt_keys - st_preload_done;
        if (preload_missing || st_preload_errors) {
            fprintf(stderr, "preload incomplete: %llu/%d stored, %llu errors\n",
                    (unsigned long long)st_preload_done, opt_keys,
                    (unsigned long long)st_preload_errors);
        }
    }

    phase = PH_WARMUP;
    uint64_t tw = now_ns();
    fill_all(tw);
    uint64_t t_measure = run_loop(tw + (uint64_t)(opt_warmup * 1e9));

    reset_stats();
    phase = PH_MEASURE;
    fputs("# measure-start\n", stdout);
    fflush(stdout);
    double cpu0 = cpu_seconds();
    t_measure = now_ns();
    uint64_t t_end = run_loop(t_measure + (uint64_t)(opt_duration * 1e9));
    double cpu1 = cpu_seconds();
    phase = PH_STOP;
    fputs("# measure-end\n", stdout);
    fflush(stdout);

    double elapsed = (double)(t_end - t_measure) / 1e9;
    if (elapsed <= 0) elapsed = 1e-9;
    double mean_us = hist_total ? (double)hist_sum_ns / (double)hist_total / 1000.0 : 0.0;
    uint64_t errors = st_err_replies + st_proto_errors + st_conn_errors + st_preload_errors +
                      preload_missing;
    if (live_conns == 0) fprintf(stderr, "all %d connections were lost\n", opt_conns);
    printf("{\"workload\":\"%s\",\"conns\":%d,\"depth\":%d,\"keys\":%d,\"value_size\":%d,"
           "\"mget_keys\":%d,\"elapsed_s\":%.4f,\"ops\":%llu,\"ops_per_s\":%.1f,"
           "\"gets\":%llu,\"sets\":%llu,\"mgets\":%llu,\"keys_requested\":%llu,"
           "\"keys_per_s\":%.1f,\"hits\":%llu,\"hit_ratio\":%.4f,"
           "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
           "\"max_us\":%.1f,\"mean_us\":%.1f,\"errors\":%llu,\"error_replies\":%llu,"
           "\"protocol_errors\":%llu,\"conn_errors\":%llu,\"preload_errors\":%llu,\"preload_missing\":%llu,"
           "\"live_conns\":%d,\"preload_s\":%.3f,\"reads_per_op\":%.3f,\"writes_per_op\":%.3f,"
           "\"epoll_waits_per_op\":%.3f,\"gen_cpu_s\":%.3f,\"gen_cpu_pct\":%.1f,\"interrupted\":%s}\n",
           wl_names[opt_workload], opt_conns, opt_depth, opt_keys, opt_value_size,
           opt_workload == WL_MULTIGET ? opt_mget : 1, elapsed, (unsigned long long)st_ops,
           (double)st_ops / elapsed, (unsigned long long)st_gets, (unsigned long long)st_sets,
           (unsigned long long)st_mgets, (unsigned long long)st_keys_requested,
           (double)st_keys_requested / elapsed, (unsigned long long)st_hits,
           st_keys_requested ? (double)st_hits / (double)st_keys_requested : 0.0,
           hist_quantile_us(0.50), hist_quantile_us(0.90), hist_quantile_us(0.99),
           hist_quantile_us(0.999), (double)hist_max_ns / 1000.0, mean_us,
           (unsigned long long)errors, (unsigned long long)st_err_replies,
           (unsigned long long)st_proto_errors, (unsigned long long)st_conn_errors,
           (unsigned long long)st_preload_errors, (unsigned long long)preload_missing, live_conns, preload_s,
           st_ops ? (double)st_reads / (double)st_ops : 0.0,
           st_ops ? (double)st_writes / (double)st_ops : 0.0,
           st_ops ? (double)st_wakeups / (double)st_ops : 0.0, cpu1 - cpu0,
           elapsed > 0.001 ? 100.0 * (cpu1 - cpu0) / elapsed : 0.0, got_signal ? "true" : "false");
    fflush(stdout);

    for (int i = 0; i < opt_conns; i++)
        if (!conns[i].dead) close(conns[i].fd);
    close(epfd);
    if (got_signal) return 130;
    if (live_conns == 0) return 3;
    return 0;
}
