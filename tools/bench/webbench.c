/* webbench.c — the HTTP client of the benchmark's `web` step (libcurl; keep-alive
 * connections, one per client thread; every request body is built in memory before the
 * clock starts). Prints one JSON object on stdout.
 *
 *   webbench stow URL CLIENTS PER_REQUEST LIST
 *       POSTs the files named in LIST (one path a line) as multipart/related;
 *       type="application/dicom" bodies of PER_REQUEST parts each, CLIENTS requests in
 *       flight. {"requests", "instances", "bytes" (the files' bytes), "body_bytes",
 *       "seconds", "status": {"200": n, ...}, "failed_requests" (non-2xx, or a body that
 *       holds a FailureReason 00081197), "first_error", "client_cpu_seconds"}
 *
 *   webbench get URLS ACCEPT RUNS WARMUP CLIENTS [SAVE_DIR]
 *       GETs each URL of the file URLS (one a line) WARMUP times untimed, then RUNS timed
 *       passes over the list (a pass is over when its last request is), CLIENTS requests
 *       in flight. With SAVE_DIR, the body of URL i's last timed request goes to
 *       SAVE_DIR/i. {"urls": [{"ms": [per run], "status", "bytes"}], "pass_seconds":
 *       [per pass], "body_bytes" (all timed passes), "client_cpu_seconds"}
 *
 *   webbench read LIST RUNS
 *       Reads every file of LIST once (to warm the page cache), then RUNS timed passes
 *       with read(2) into a 128 KiB buffer, as cat does. {"files", "bytes", "pass_seconds"}
 *
 *   webbench tcp LIST RUNS
 *       The loopback TCP limit for the same bytes: after one warming read, a thread sends
 *       every file of LIST with sendfile(2) over one 127.0.0.1 connection, RUNS times; this
 *       thread receives with recv(2) into a 128 KiB buffer and times each pass. No HTTP: what
 *       any server could at best do here with one connection. {"files", "bytes", "pass_seconds"}
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BOUNDARY "dicomfs-bench-7d3c1a"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what)
{
    fprintf(stderr, "webbench: %s: %s\n", what, strerror(errno));
    exit(2);
}

static char **read_lines(const char *path, size_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    char **v = NULL, *line = NULL;
    size_t cap = 0, lcap = 0;
    ssize_t len;
    *n = 0;
    while ((len = getline(&line, &lcap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            v = realloc(v, cap * sizeof *v);
            if (!v) abort();
        }
        v[(*n)++] = strdup(line);
    }
    free(line);
    fclose(f);
    return v;
}

static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path);
    struct stat st;
    if (fstat(fd, &st) != 0) die(path);
    char *buf = malloc(st.st_size ? st.st_size : 1);
    if (!buf) abort();
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die(path);
        got += r;
    }
    close(fd);
    *len = got;
    return buf;
}

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

static void json_string(FILE *out, const char *s, size_t max)
{
    fputc('"', out);
    for (size_t i = 0; s && s[i] && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

/* ---- shared by stow and get ----------------------------------------------------------- */

typedef struct {
    buf body;     /* kept only when keep_body */
    int keep_body;
    FILE *save;   /* or written here */
    uint64_t bytes;
} sink;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *cls)
{
    sink *s = cls;
    size_t n = size * nmemb;
    s->bytes += n;
    if (s->keep_body) buf_add(&s->body, ptr, n);
    if (s->save) fwrite(ptr, 1, n, s->save);
    return n;
}

/* ---- stow ------------------------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len;
    size_t instances;
} request_body;

static request_body *bodies;
static size_t n_bodies;
static atomic_size_t next_job;
static const char *url;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long status_count[600];
static long failed_requests;
static char first_error[600];

static void *stow_client(void *arg)
{
    (void)arg;
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: multipart/related; type=\"application/dicom\"; boundary=" BOUNDARY);
    h = curl_slist_append(h, "Accept: application/dicom+json");
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    sink s = {.keep_body = 1};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    for (;;) {
        size_t j = atomic_fetch_add(&next_job, 1);
        if (j >= n_bodies) break;
        s.body.len = 0;
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, bodies[j].data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bodies[j].len);
        CURLcode rc = curl_easy_perform(c);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        buf_add(&s.body, "", 1);
        s.body.len--;
        int failed = rc != CURLE_OK || code < 200 || code > 299 || strstr(s.body.p, "00081197") != NULL;
        pthread_mutex_lock(&lock);
        if (rc != CURLE_OK) code = 0;
        status_count[code >= 0 && code < 600 ? code : 0]++;
        if (failed) {
            failed_requests++;
            if (!first_error[0])
                snprintf(first_error, sizeof first_error, "request %zu: %s, HTTP %ld: %.400s", j,
                         rc != CURLE_OK ? curl_easy_strerror(rc) : "ok", code, s.body.p);
        }
        pthread_mutex_unlock(&lock);
    }
    free(s.body.p);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static int cmd_stow(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: webbench stow URL CLIENTS PER_REQUEST LIST\n");
        return 2;
    }
    url = argv[2];
    int clients = atoi(argv[3]);
    size_t per = (size_t)atol(argv[4]), n_files;
    char **files = read_lines(argv[5], &n_files);
    if (clients < 1 || per < 1) return 2;
    uint64_t file_bytes = 0, all_body = 0;
    n_bodies = (n_files + per - 1) / per;
    bodies = calloc(n_bodies ? n_bodies : 1, sizeof *bodies);
    for (size_t b = 0; b < n_bodies; b++) {
        buf body = {0};
        for (size_t i = b * per; i < n_files && i < (b + 1) * per; i++) {
            size_t len;
            char *data = slurp(files[i], &len);
            const char *head = "--" BOUNDARY "\r\nContent-Type: application/dicom\r\n\r\n";
            buf_add(&body, head, strlen(head));
            buf_add(&body, data, len);
            buf_add(&body, "\r\n", 2);
            free(data);
            file_bytes += len;
            bodies[b].instances++;
        }
        const char *tail = "--" BOUNDARY "--\r\n";
        buf_add(&body, tail, strlen(tail));
        bodies[b].data = body.p;
        bodies[b].len = body.len;
        all_body += body.len;
    }
    pthread_t *t = calloc(clients, sizeof *t);
    double cpu0 = cpu_seconds(), t0 = now();
    for (int i = 0; i < clients; i++) pthread_create(&t[i], NULL, stow_client, NULL);
    for (int i = 0; i < clients; i++) pthread_join(t[i], NULL);
    double t1 = now(), cpu1 = cpu_seconds();
    printf("{\"requests\": %zu, \"instances\": %zu, \"bytes\": %llu, \"body_bytes\": %llu, \"seconds\": %.6f, "
           "\"clients\": %d, \"per_request\": %zu, \"status\": {",
           n_bodies, n_files, (unsigned long long)file_bytes, (unsigned long long)all_body, t1 - t0, clients, per);
    int first = 1;
    for (int i = 0; i < 600; i++)
        if (status_count[i]) {
            printf("%s\"%d\": %ld", first ? "" : ", ", i, status_count[i]);
            first = 0;
        }
    printf("}, \"failed_requests\": %ld, \"first_error\": ", failed_requests);
    json_string(stdout, first_error, sizeof first_error);
    printf(", \"client_cpu_seconds\": %.6f}\n", cpu1 - cpu0);
    return 0;
}

/* ---- get ------------------------------------------------------------------------------- */

static char **urls;
static size_t n_urls;
static double *ms;         /* [run * n_urls + i] */
static long *codes;        /* last status per URL */
static uint64_t *sizes;    /* last body size per URL */
static const char *accept_header;
static const char *save_dir;
static int pass_runs, pass_timed; /* the pass being run: its run index, whether timed */
static uint64_t timed_bytes;

static void *get_client(void *arg)
{
    CURL **cp = arg;
    CURL *c = *cp;
    sink s = {0};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    uint64_t mine = 0;
    for (;;) {
        size_t i = atomic_fetch_add(&next_job, 1);
        if (i >= n_urls) break;
        s.bytes = 0;
        s.save = NULL;
        if (save_dir && pass_timed && pass_runs == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%zu", save_dir, i);
            s.save = fopen(path, "wb");
            if (!s.save) die(path);
        }
        curl_easy_setopt(c, CURLOPT_URL, urls[i]);
        double t0 = now();
        CURLcode rc = curl_easy_perform(c);
        double t1 = now();
        if (s.save) fclose(s.save);
        long code = 0;
        if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        else fprintf(stderr, "webbench: %s: %s\n", urls[i], curl_easy_strerror(rc));
        codes[i] = code;
        sizes[i] = s.bytes;
        if (pass_timed) {
            ms[(size_t)pass_runs * n_urls + i] = (t1 - t0) * 1e3;
            mine += s.bytes;
        }
    }
    pthread_mutex_lock(&lock);
    timed_bytes += mine;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int cmd_get(int argc, char **argv)
{
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: webbench get URLS ACCEPT RUNS WARMUP CLIENTS [SAVE_DIR]\n");
        return 2;
    }
    urls = read_lines(argv[2], &n_urls);
    accept_header = argv[3];
    int runs = atoi(argv[4]), warmup = atoi(argv[5]), clients = atoi(argv[6]);
    save_dir = argc == 8 ? argv[7] : NULL;
    if (runs < 1 || clients < 1 || warmup < 0) return 2;
    ms = calloc((size_t)runs * n_urls + 1, sizeof *ms);
    codes = calloc(n_urls + 1, sizeof *codes);
    sizes = calloc(n_urls + 1, sizeof *sizes);
    double *pass = calloc(runs, sizeof *pass);
    char hdr[1024];
    snprintf(hdr, sizeof hdr, "Accept: %s", accept_header);
    struct curl_slist *h = curl_slist_append(NULL, hdr);
    CURL **handles = calloc(clients, sizeof *handles);
    for (int i = 0; i < clients; i++) {
        handles[i] = curl_easy_init();
        curl_easy_setopt(handles[i], CURLOPT_HTTPHEADER, h);
        /* receive in 128 KiB reads, as the page-cache reader does (curl's default: 16 KiB) */
        curl_easy_setopt(handles[i], CURLOPT_BUFFERSIZE, 128L * 1024);
    }
    pthread_t *t = calloc(clients, sizeof *t);
    double cpu_timed = 0;
    for (int p = 0; p < warmup + runs; p++) {
        pass_timed = p >= warmup;
        pass_runs = p - warmup;
        atomic_store(&next_job, 0);
        double cpu0 = cpu_seconds(), t0 = now();
        if (clients == 1) {
            get_client(&handles[0]);
        } else {
            for (int i = 0; i < clients; i++) pthread_create(&t[i], NULL, get_client, &handles[i]);
            for (int i = 0; i < clients; i++) pthread_join(t[i], NULL);
        }
        double t1 = now();
        if (pass_timed) {
            pass[pass_runs] = t1 - t0;
            cpu_timed += cpu_seconds() - cpu0;
        }
    }
    printf("{\"runs\": %d, \"warmup\": %d, \"clients\": %d, \"body_bytes\": %llu, \"client_cpu_seconds\": %.6f, "
           "\"pass_seconds\": [",
           runs, warmup, clients, (unsigned long long)timed_bytes, cpu_timed);
    for (int r = 0; r < runs; r++) printf("%s%.6f", r ? ", " : "", pass[r]);
    printf("], \"urls\": [");
    for (size_t i = 0; i < n_urls; i++) {
        printf("%s{\"status\": %ld, \"bytes\": %llu, \"ms\": [", i ? ", " : "", codes[i], (unsigned long long)sizes[i]);
        for (int r = 0; r < runs; r++) printf("%s%.4f", r ? ", " : "", ms[(size_t)r * n_urls + i]);
        printf("]}");
    }
    printf("]}\n");
    for (int i = 0; i < clients; i++) curl_easy_cleanup(handles[i]);
    curl_slist_free_all(h);
    return 0;
}

/* ---- read ------------------------------------------------------------------------------ */

static uint64_t read_all(char **files, size_t n, char *b, size_t cap)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int fd = open(files[i], O_RDONLY);
        if (fd < 0) die(files[i]);
        ssize_t r;
        while ((r = read(fd, b, cap)) != 0) {
            if (r < 0) {
                if (errno == EINTR) continue;
                die(files[i]);
            }
            total += r;
        }
        close(fd);
    }
    return total;
}

static int cmd_read(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: webbench read LIST RUNS\n");
        return 2;
    }
    size_t n;
    char **files = read_lines(argv[2], &n);
    int runs = atoi(argv[3]);
    size_t cap = 128 * 1024;
    char *b = malloc(cap);
    uint64_t bytes = read_all(files, n, b, cap);
    printf("{\"files\": %zu, \"bytes\": %llu, \"pass_seconds\": [", n, (unsigned long long)bytes);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        read_all(files, n, b, cap);
        printf("%s%.6f", r ? ", " : "", now() - t0);
    }
    printf("]}\n");
    return 0;
}

/* ---- tcp ------------------------------------------------------------------------------- */

static char **tcp_files;
static size_t tcp_n;
static int tcp_runs, tcp_listen;

static void *tcp_sender(void *arg)
{
    (void)arg;
    int s = accept(tcp_listen, NULL, NULL);
    if (s < 0) die("accept");
    for (int r = 0; r < tcp_runs; r++)
        for (size_t i = 0; i < tcp_n; i++) {
            int fd = open(tcp_files[i], O_RDONLY);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) != 0) die(tcp_files[i]);
            off_t off = 0;
            while (off < st.st_size) {
                ssize_t w = sendfile(s, fd, &off, st.st_size - off);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) die("sendfile");
            }
            close(fd);
        }
    close(s);
    return NULL;
}

static int cmd_tcp(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: webbench tcp LIST RUNS\n");
        return 2;
    }
    tcp_files = read_lines(argv[2], &tcp_n);
    tcp_runs = atoi(argv[3]);
    size_t cap = 128 * 1024;
    char *b = malloc(cap);
    uint64_t bytes = read_all(tcp_files, tcp_n, b, cap); /* warm the page cache */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    tcp_listen = socket(AF_INET, SOCK_STREAM, 0);
    if (tcp_listen < 0 || bind(tcp_listen, (struct sockaddr *)&a, sizeof a) != 0 || listen(tcp_listen, 1) != 0 ||
        getsockname(tcp_listen, (struct sockaddr *)&a, &alen) != 0)
        die("listen");
    pthread_t t;
    pthread_create(&t, NULL, tcp_sender, NULL);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    printf("{\"files\": %zu, \"bytes\": %llu, \"pass_seconds\": [", tcp_n, (unsigned long long)bytes);
    uint64_t got = 0; /* a recv can hold the start of the next pass */
    for (int r = 0; r < tcp_runs; r++) {
        double t0 = now();
        while (got < bytes * (uint64_t)(r + 1)) {
            ssize_t n = recv(c, b, cap, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) die("recv");
            got += n;
        }
        printf("%s%.6f", r ? ", " : "", now() - t0);
    }
    printf("]}\n");
    pthread_join(t, NULL);
    close(c);
    close(tcp_listen);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: webbench stow|get|read|tcp ...\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_ALL);
    if (strcmp(argv[1], "stow") == 0) return cmd_stow(argc, argv);
    if (strcmp(argv[1], "get") == 0) return cmd_get(argc, argv);
    if (strcmp(argv[1], "read") == 0) return cmd_read(argc, argv);
    if (strcmp(argv[1], "tcp") == 0) return cmd_tcp(argc, argv);
    fprintf(stderr, "webbench: unknown mode %s\n", argv[1]);
    return 2;
}
