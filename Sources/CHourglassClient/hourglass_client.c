/*
 * hourglass_client.c — the hourglass/1 client: TCP + TLS 1.3 (OpenSSL), framing, unary calls
 * of hourglass.v1.TaskService. Written from docs/protocol.md.
 *
 * I/O model: the socket is non-blocking; OpenSSL works on two memory BIOs and this file moves
 * bytes between them and the socket with send(MSG_NOSIGNAL)/recv, waiting in poll() until the
 * current deadline. So no call blocks past its deadline and no signal is ever raised.
 */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif

#include "hourglass_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hourglass/rpc/v1/rpc.pb-c.h"
#include "hourglass/v1/tasks.pb-c.h"

/* ---- protocol constants (docs/protocol.md §20) ---- */

enum {
  FRAME_SETTINGS = 0,
  FRAME_HEADERS = 1,
  FRAME_MESSAGE = 2,
  FRAME_TRAILERS = 3,
  FRAME_RESET = 4,
  FRAME_CREDIT = 5,
  FRAME_PING = 6,
  FRAME_PONG = 7,
  FRAME_GOAWAY = 8
};

#define FLAG_END_STREAM 0x01u
#define FLAG_MORE 0x02u
#define HEADER_SIZE 10u
#define MAX_STREAM_ID 0x7FFFFFFFu

/* What this client announces in its SETTINGS (what it is willing to receive). */
#define MY_MAX_FRAME_SIZE 65536u
#define MY_MAX_MESSAGE_SIZE (4u * 1024u * 1024u)
#define MY_INITIAL_STREAM_CREDIT 64u

#define DEFAULT_CONNECT_TIMEOUT_MS 10000u
#define CLOSE_GRACE_MS 1000

static const unsigned char PREFACE[8] = {0x48, 0x47, 0x4c, 0x31, 0x0d, 0x0a, 0x0d, 0x0a};
static const unsigned char ALPN[] = "\x0bhourglass/1";

struct hg_client {
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  BIO *rbio; /* network -> OpenSSL (owned by ssl) */
  BIO *wbio; /* OpenSSL -> network (owned by ssl) */

  /* Decrypted bytes received and not yet consumed as frames: in[in_off ..< in_len]. */
  uint8_t *in;
  size_t in_off, in_len, in_cap;

  /* The server's SETTINGS, defaults substituted. */
  uint32_t peer_max_frame_size;
  uint32_t peer_max_message_size;
  uint32_t peer_max_concurrent_streams;
  uint32_t peer_initial_stream_credit;
  uint32_t peer_keepalive_ms; /* how often the server PINGs a quiet connection; 0: never */
  int64_t last_received_ms;   /* when bytes last arrived from the server */

  uint32_t next_stream_id; /* the id the next call uses */
  uint32_t last_stream_id; /* the highest id opened so far; 0 before the first call */

  int broken;              /* the connection can carry nothing more */
  int goaway;              /* the server sent GOAWAY */
  uint32_t goaway_last_stream_id;

  uint32_t call_timeout_ms;
  char *user_id;
  hg_connect_options options; /* a copy, strings owned, for reconnecting */
};

/* A growable byte buffer. */
typedef struct buf {
  uint8_t *p;
  size_t len, cap;
} buf;

/* ---- status ---- */

static int set_status(hg_status *st, int code, int local, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int set_status(hg_status *st, int code, int local, const char *fmt, ...) {
  if (st != NULL) {
    st->code = code;
    st->local = local;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof st->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

static int ok_status(hg_status *st) {
  if (st != NULL) {
    st->code = HG_OK;
    st->local = HG_LOCAL_NONE;
    st->message[0] = '\0';
  }
  return HG_OK;
}

const char *hg_status_code_name(int code) {
  static const char *const names[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  if (code < 0 || code > 16) return "UNKNOWN";
  return names[code];
}

const char *hg_task_status_name(int status) {
  static const char *const names[] = {"UNSPECIFIED", "SCHEDULED", "RUNNING", "RETRYING",
                                      "SUCCEEDED", "FAILED", "DELETED", "PAUSED"};
  if (status < 0 || status > 7) return "UNKNOWN";
  return names[status];
}

const char *hg_run_status_name(int status) {
  static const char *const names[] = {"UNSPECIFIED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED",
                                      "DEAD", "CANCELLED", "SKIPPED", "TIMED_OUT", "LOST"};
  if (status < 0 || status > 9) return "UNKNOWN";
  return names[status];
}

/* The oldest queued OpenSSL error as text, and the queue cleared (the queue is per thread). */
static void ssl_error_text(char *out, size_t size) {
  unsigned long e = ERR_get_error();
  if (e == 0) {
    snprintf(out, size, "no further detail");
  } else {
    ERR_error_string_n(e, out, size);
  }
  ERR_clear_error();
}

/* ---- buffers ---- */

static int buf_reserve(buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra) {
    if (cap > SIZE_MAX / 2) return 0;
    cap *= 2;
  }
  uint8_t *p = realloc(b->p, cap);
  if (p == NULL) return 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

static int buf_append(buf *b, const void *data, size_t len) {
  if (len == 0) return 1;
  if (!buf_reserve(b, len)) return 0;
  memcpy(b->p + b->len, data, len);
  b->len += len;
  return 1;
}

static void buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* Appends one frame (header + payload) to `b`. */
static int buf_append_frame(buf *b, uint8_t type, uint8_t flags, uint32_t stream_id,
                            const uint8_t *payload, size_t len) {
  uint8_t h[HEADER_SIZE];
  h[0] = (uint8_t)(len >> 24);
  h[1] = (uint8_t)(len >> 16);
  h[2] = (uint8_t)(len >> 8);
  h[3] = (uint8_t)len;
  h[4] = type;
  h[5] = flags;
  h[6] = (uint8_t)((stream_id >> 24) & 0x7F);
  h[7] = (uint8_t)(stream_id >> 16);
  h[8] = (uint8_t)(stream_id >> 8);
  h[9] = (uint8_t)stream_id;
  return buf_append(b, h, sizeof h) && buf_append(b, payload, len);
}

/* Appends a frame whose payload is a packed protobuf message. */
static int buf_append_message_frame(buf *b, uint8_t type, uint8_t flags, uint32_t stream_id,
                                    const ProtobufCMessage *message) {
  size_t size = protobuf_c_message_get_packed_size(message);
  uint8_t *payload = malloc(size ? size : 1);
  if (payload == NULL) return 0;
  protobuf_c_message_pack(message, payload);
  int ok = buf_append_frame(b, type, flags, stream_id, payload, size);
  free(payload);
  return ok;
}

/* ---- time ---- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline `ms` from now; -1 = none. */
static int64_t deadline_after(uint32_t ms) { return ms == 0 ? -1 : now_ms() + (int64_t)ms; }

/* Waits for `events` on fd until `deadline`: 1 ready, 0 deadline passed, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int timeout = -1;
    if (deadline >= 0) {
      int64_t left = deadline - now_ms();
      if (left <= 0) return 0;
      timeout = left > 60000 ? 60000 : (int)left;
    }
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int r = poll(&p, 1, timeout);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return -1;
  }
}

/* ---- socket <-> OpenSSL ---- */

static int mark_broken(hg_client *c, hg_status *st, int code, int local, const char *what) {
  c->broken = 1;
  return set_status(st, code, local, "%s", what);
}

static int deadline_status(hg_client *c, hg_status *st, int local) {
  (void)c;
  return set_status(st, HG_DEADLINE_EXCEEDED, local, "deadline exceeded");
}

/* Sends everything OpenSSL has produced to the socket. */
static int flush_tls(hg_client *c, int64_t deadline, hg_status *st) {
  uint8_t chunk[16384];
  for (;;) {
    int n = BIO_read(c->wbio, chunk, (int)sizeof chunk);
    if (n <= 0) return HG_OK;
    size_t sent = 0;
    while (sent < (size_t)n) {
      ssize_t w = send(c->fd, chunk + sent, (size_t)n - sent, MSG_NOSIGNAL);
      if (w > 0) {
        sent += (size_t)w;
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        int r = wait_fd(c->fd, POLLOUT, deadline);
        if (r == 0) {
          /* Part of a TLS record may be out: the stream of records is broken now. */
          c->broken = 1;
          return deadline_status(c, st, HG_LOCAL_DEADLINE);
        }
        if (r < 0) return mark_broken(c, st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, "poll failed");
        continue;
      }
      char text[200];
      snprintf(text, sizeof text, "sending failed: %s", strerror(errno));
      return mark_broken(c, st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, text);
    }
  }
}

/* Waits for bytes from the socket and hands them to OpenSSL. */
static int feed_tls(hg_client *c, int64_t deadline, hg_status *st) {
  uint8_t chunk[16384];
  for (;;) {
    ssize_t n = recv(c->fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      if (BIO_write(c->rbio, chunk, (int)n) != (int)n) {
        return mark_broken(c, st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
      }
      return HG_OK;
    }
    if (n == 0) {
      return mark_broken(c, st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, "the server closed the connection");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int r = wait_fd(c->fd, POLLIN, deadline);
      if (r == 0) return deadline_status(c, st, HG_LOCAL_DEADLINE);
      if (r < 0) return mark_broken(c, st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, "poll failed");
      continue;
    }
    char text[200];
    snprintf(text, sizeof text, "receiving failed: %s", strerror(errno));
    return mark_broken(c, st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, text);
  }
}

/* Turns an OpenSSL failure (not WANT_READ / WANT_WRITE) into a status; the connection breaks. */
static int tls_failure(hg_client *c, int ssl_error, const char *during, hg_status *st) {
  char detail[200];
  if (ssl_error == SSL_ERROR_ZERO_RETURN) {
    return mark_broken(c, st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, "the server closed the connection");
  }
  ssl_error_text(detail, sizeof detail);
  c->broken = 1;
  return set_status(st, HG_UNAVAILABLE, HG_LOCAL_TLS, "TLS failure %s: %s", during, detail);
}

/* Encrypts and sends `len` bytes. */
static int tls_write(hg_client *c, const uint8_t *data, size_t len, int64_t deadline, hg_status *st) {
  if (c->broken) return set_status(st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, "the connection is closed");
  size_t done = 0;
  while (done < len) {
    size_t chunk = len - done > (1u << 30) ? (1u << 30) : len - done;
    ERR_clear_error();
    int r = SSL_write(c->ssl, data + done, (int)chunk);
    if (r > 0) {
      done += (size_t)r;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    int rc;
    if (e == SSL_ERROR_WANT_WRITE) {
      if ((rc = flush_tls(c, deadline, st)) != HG_OK) return rc;
    } else if (e == SSL_ERROR_WANT_READ) {
      if ((rc = flush_tls(c, deadline, st)) != HG_OK) return rc;
      if ((rc = feed_tls(c, deadline, st)) != HG_OK) return rc;
    } else {
      return tls_failure(c, e, "while sending", st);
    }
  }
  return flush_tls(c, deadline, st);
}

/* Reads at least one more decrypted byte into c->in. */
static int tls_read_more(hg_client *c, int64_t deadline, hg_status *st) {
  if (c->broken) return set_status(st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, "the connection is closed");
  for (;;) {
    /* Compact, then make room. */
    if (c->in_off > 0) {
      memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
      c->in_len -= c->in_off;
      c->in_off = 0;
    }
    if (c->in_cap - c->in_len < 16384) {
      size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
      uint8_t *p = realloc(c->in, cap);
      if (p == NULL) return mark_broken(c, st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
      c->in = p;
      c->in_cap = cap;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
    if (r > 0) {
      c->in_len += (size_t)r;
      c->last_received_ms = now_ms();
      return HG_OK;
    }
    int e = SSL_get_error(c->ssl, r);
    int rc;
    if (e == SSL_ERROR_WANT_READ) {
      if ((rc = flush_tls(c, deadline, st)) != HG_OK) return rc;
      if ((rc = feed_tls(c, deadline, st)) != HG_OK) return rc;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      if ((rc = flush_tls(c, deadline, st)) != HG_OK) return rc;
    } else {
      return tls_failure(c, e, "while receiving", st);
    }
  }
}

/* ---- frames ---- */

typedef struct frame {
  uint32_t length;
  uint8_t type;
  uint8_t flags;
  uint32_t stream_id;
  const uint8_t *payload; /* valid until the next read_frame */
} frame;

/* Sends the frames in `out` (best effort when the connection is failing). */
static int send_buf(hg_client *c, const buf *out, int64_t deadline, hg_status *st) {
  return tls_write(c, out->p, out->len, deadline, st);
}

/* A connection error this side detected: GOAWAY(code) to the server, then the connection is
 * unusable. The status reports `code` and `text`. */
static int connection_error(hg_client *c, int code, const char *text, hg_status *st) {
  if (!c->broken) {
    Hourglass__Rpc__V1__GoAway g = HOURGLASS__RPC__V1__GO_AWAY__INIT;
    g.last_stream_id = 0;
    g.code = (uint32_t)code;
    g.message = (char *)text;
    buf out = {0};
    if (buf_append_message_frame(&out, FRAME_GOAWAY, 0, 0, &g.base)) {
      send_buf(c, &out, now_ms() + CLOSE_GRACE_MS, NULL);
    }
    buf_free(&out);
  }
  c->broken = 1;
  return set_status(st, code, HG_LOCAL_PROTOCOL, "protocol error: %s", text);
}

/* Reads one frame, making the receiver's checks of docs/protocol.md §4.1. */
static int read_frame(hg_client *c, int64_t deadline, frame *f, hg_status *st) {
  int rc;
  while (c->in_len - c->in_off < HEADER_SIZE) {
    if ((rc = tls_read_more(c, deadline, st)) != HG_OK) return rc;
  }
  const uint8_t *h = c->in + c->in_off;
  f->length = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
  f->type = h[4];
  f->flags = h[5];
  uint32_t sid = (uint32_t)h[6] << 24 | (uint32_t)h[7] << 16 | (uint32_t)h[8] << 8 | h[9];
  /* Check the size before reading any of the payload. */
  if (f->length > MY_MAX_FRAME_SIZE) {
    return connection_error(c, HG_RESOURCE_EXHAUSTED, "frame larger than max_frame_size", st);
  }
  if (sid & 0x80000000u) {
    return connection_error(c, HG_INTERNAL, "reserved stream id bit set", st);
  }
  f->stream_id = sid;
  while (c->in_len - c->in_off < HEADER_SIZE + (size_t)f->length) {
    if ((rc = tls_read_more(c, deadline, st)) != HG_OK) return rc;
  }
  f->payload = c->in + c->in_off + HEADER_SIZE;
  c->in_off += HEADER_SIZE + f->length;
  return HG_OK;
}

/* Answers a PING (connection-level frames that need an answer). */
static int answer_ping(hg_client *c, const frame *f, int64_t deadline, hg_status *st) {
  if (f->stream_id != 0 || f->length != 8) {
    return connection_error(c, HG_INTERNAL, "PING not on stream 0 or not 8 bytes", st);
  }
  buf out = {0};
  if (!buf_append_frame(&out, FRAME_PONG, 0, 0, f->payload, 8)) {
    buf_free(&out);
    return mark_broken(c, st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  }
  int rc = send_buf(c, &out, deadline, st);
  buf_free(&out);
  return rc;
}

/* Handles a GOAWAY frame: records it. */
static int take_goaway(hg_client *c, const frame *f, hg_status *st) {
  if (f->stream_id != 0) return connection_error(c, HG_INTERNAL, "GOAWAY not on stream 0", st);
  Hourglass__Rpc__V1__GoAway *g = hourglass__rpc__v1__go_away__unpack(NULL, f->length, f->payload);
  if (g == NULL) return connection_error(c, HG_INTERNAL, "GOAWAY payload does not parse", st);
  /* The smallest last_stream_id of all the GOAWAYs stands (§15.1). */
  if (!c->goaway || g->last_stream_id < c->goaway_last_stream_id) c->goaway_last_stream_id = g->last_stream_id;
  c->goaway = 1;
  hourglass__rpc__v1__go_away__free_unpacked(g, NULL);
  return HG_OK;
}

/* ---- connect ---- */

static int is_ip_address(const char *host) {
  unsigned char a[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* TCP connect to host:port with a deadline; returns a non-blocking socket or -1. */
static int tcp_connect(const char *host, uint16_t port, int64_t deadline, hg_status *st) {
  char service[8];
  snprintf(service, sizeof service, "%u", (unsigned)port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo *list = NULL;
  int gai = getaddrinfo(host, service, &hints, &list);
  if (gai != 0) {
    set_status(st, HG_UNAVAILABLE, HG_LOCAL_RESOLVE, "cannot resolve %s: %s", host, gai_strerror(gai));
    return -1;
  }
  int fd = -1;
  int last_errno = 0;
  int timed_out = 0;
  for (struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    /* TCP keepalive: a call with no deadline (call_timeout_ms 0) on a connection whose peer
     * vanished fails within about a minute and a half (60 s quiet, then 3 probes 10 s apart)
     * instead of waiting for ever. Best effort. */
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#ifdef TCP_KEEPIDLE
    int idle = 60, interval = 10, count = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
#endif
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      int w = wait_fd(fd, POLLOUT, deadline);
      if (w == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        r = err == 0 ? 0 : -1;
        errno = err;
      } else {
        if (w == 0) timed_out = 1;
        r = -1;
        errno = w == 0 ? ETIMEDOUT : errno;
      }
    }
    if (r == 0) break;
    last_errno = errno;
    close(fd);
    fd = -1;
    if (timed_out) break;
  }
  freeaddrinfo(list);
  if (fd < 0) {
    if (timed_out) {
      set_status(st, HG_DEADLINE_EXCEEDED, HG_LOCAL_CONNECT, "connecting to %s:%u timed out", host, (unsigned)port);
    } else {
      set_status(st, HG_UNAVAILABLE, HG_LOCAL_CONNECT, "cannot connect to %s:%u: %s", host, (unsigned)port,
                 strerror(last_errno));
    }
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* The common name of a certificate's subject, copied; NULL if it has none. */
static char *certificate_common_name(X509 *cert) {
  if (cert == NULL) return NULL;
  X509_NAME *name = X509_get_subject_name(cert);
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return NULL;
  ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char *utf8 = NULL;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return NULL;
  char *out = malloc((size_t)n + 1);
  if (out != NULL) {
    memcpy(out, utf8, (size_t)n);
    out[n] = '\0';
  }
  OPENSSL_free(utf8);
  return out;
}

/* OpenSSL's password callback: none. An encrypted key file then fails to load, with an error,
 * instead of OpenSSL asking for a passphrase on the terminal in the middle of a call. */
static int refuse_password(char *password, int size, int rwflag, void *userdata) {
  (void)password;
  (void)size;
  (void)rwflag;
  (void)userdata;
  return 0;
}

static int setup_tls(hg_client *c, const hg_connect_options *o, hg_status *st) {
  char detail[200];
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (c->ctx == NULL) goto ssl_failed;
  SSL_CTX_set_default_passwd_cb(c->ctx, refuse_password);
  if (!SSL_CTX_set_min_proto_version(c->ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(c->ctx, TLS1_3_VERSION)) {
    goto ssl_failed;
  }
  if (SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL) != 1) {
    ssl_error_text(detail, sizeof detail);
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "cannot load CA %s: %s", o->ca_file, detail);
  }
  if (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert_file) != 1) {
    ssl_error_text(detail, sizeof detail);
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "cannot load certificate %s: %s", o->cert_file,
                      detail);
  }
  if (SSL_CTX_use_PrivateKey_file(c->ctx, o->key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(c->ctx) != 1) {
    ssl_error_text(detail, sizeof detail);
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "cannot load key %s (an unencrypted PEM private key): %s",
                      o->key_file, detail);
  }
  SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
  /* SSL_CTX_set_alpn_protos returns 0 on success. */
  if (SSL_CTX_set_alpn_protos(c->ctx, ALPN, (unsigned)(sizeof ALPN - 1)) != 0) goto ssl_failed;

  c->ssl = SSL_new(c->ctx);
  if (c->ssl == NULL) goto ssl_failed;
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (c->rbio == NULL || c->wbio == NULL) {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
    c->rbio = c->wbio = NULL;
    goto ssl_failed;
  }
  BIO_set_mem_eof_return(c->rbio, -1);
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  if (is_ip_address(o->host)) {
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, o->host) != 1) goto ssl_failed;
  } else {
    if (SSL_set1_host(c->ssl, o->host) != 1) goto ssl_failed;
    if (SSL_set_tlsext_host_name(c->ssl, o->host) != 1) goto ssl_failed;
  }
  SSL_set_connect_state(c->ssl);
  return HG_OK;

ssl_failed:
  ssl_error_text(detail, sizeof detail);
  return set_status(st, HG_UNAVAILABLE, HG_LOCAL_TLS, "TLS setup failed: %s", detail);
}

static int tls_handshake(hg_client *c, int64_t deadline, hg_status *st) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) break;
    int e = SSL_get_error(c->ssl, r);
    int rc;
    if (e == SSL_ERROR_WANT_READ) {
      if ((rc = flush_tls(c, deadline, st)) != HG_OK) return rc;
      hg_status inner;
      if ((rc = feed_tls(c, deadline, &inner)) != HG_OK) {
        if (rc == HG_DEADLINE_EXCEEDED) {
          return set_status(st, HG_DEADLINE_EXCEEDED, HG_LOCAL_TLS, "TLS handshake timed out");
        }
        return set_status(st, rc, HG_LOCAL_TLS, "TLS handshake failed: %s", inner.message);
      }
    } else if (e == SSL_ERROR_WANT_WRITE) {
      if ((rc = flush_tls(c, deadline, st)) != HG_OK) return rc;
    } else {
      long verify = SSL_get_verify_result(c->ssl);
      /* Send our alert, if any, before reporting. */
      flush_tls(c, now_ms() + CLOSE_GRACE_MS, NULL);
      c->broken = 1;
      if (verify != X509_V_OK) {
        ERR_clear_error();
        return set_status(st, HG_UNAVAILABLE, HG_LOCAL_TLS, "server certificate refused: %s",
                          X509_verify_cert_error_string(verify));
      }
      char detail[200];
      ssl_error_text(detail, sizeof detail);
      return set_status(st, HG_UNAVAILABLE, HG_LOCAL_TLS, "TLS handshake failed: %s", detail);
    }
  }
  const unsigned char *proto = NULL;
  unsigned int proto_len = 0;
  SSL_get0_alpn_selected(c->ssl, &proto, &proto_len);
  if (proto_len != sizeof ALPN - 2 || memcmp(proto, ALPN + 1, proto_len) != 0) {
    c->broken = 1;
    return set_status(st, HG_UNAVAILABLE, HG_LOCAL_TLS, "the server did not agree to ALPN hourglass/1");
  }
  return flush_tls(c, deadline, st);
}

/* Sends the preface and our SETTINGS, then reads the server's SETTINGS (its first frame). */
static int exchange_settings(hg_client *c, int64_t deadline, hg_status *st) {
  Hourglass__Rpc__V1__Settings mine = HOURGLASS__RPC__V1__SETTINGS__INIT;
  mine.max_frame_size = MY_MAX_FRAME_SIZE;
  mine.max_message_size = MY_MAX_MESSAGE_SIZE;
  mine.max_concurrent_streams = 1;
  mine.initial_stream_credit = MY_INITIAL_STREAM_CREDIT;
  buf out = {0};
  if (!buf_append(&out, PREFACE, sizeof PREFACE) ||
      !buf_append_message_frame(&out, FRAME_SETTINGS, 0, 0, &mine.base)) {
    buf_free(&out);
    return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  }
  int rc = send_buf(c, &out, deadline, st);
  buf_free(&out);
  if (rc != HG_OK) return rc;

  frame f;
  if ((rc = read_frame(c, deadline, &f, st)) != HG_OK) {
    if (rc == HG_DEADLINE_EXCEEDED) return set_status(st, rc, HG_LOCAL_CONNECT, "no SETTINGS from the server in time");
    return rc;
  }
  if (f.type != FRAME_SETTINGS || f.stream_id != 0) {
    return connection_error(c, HG_INTERNAL, "the server's first frame is not SETTINGS on stream 0", st);
  }
  Hourglass__Rpc__V1__Settings *s = hourglass__rpc__v1__settings__unpack(NULL, f.length, f.payload);
  if (s == NULL) return connection_error(c, HG_INTERNAL, "SETTINGS payload does not parse", st);
  c->peer_max_frame_size = s->max_frame_size ? s->max_frame_size : 65536u;
  c->peer_max_message_size = s->max_message_size ? s->max_message_size : 4194304u;
  c->peer_max_concurrent_streams = s->max_concurrent_streams ? s->max_concurrent_streams : 1024u;
  c->peer_initial_stream_credit = s->initial_stream_credit ? s->initial_stream_credit : 64u;
  c->peer_keepalive_ms = s->keepalive_interval_ms;
  hourglass__rpc__v1__settings__free_unpacked(s, NULL);
  if (c->peer_max_frame_size < 16384u || c->peer_max_frame_size > 0x7FFFFFFFu ||
      c->peer_initial_stream_credit > 0x7FFFFFFFu) {
    return connection_error(c, HG_INTERNAL, "SETTINGS value out of range", st);
  }
  return HG_OK;
}

/* Ends the current connection, politely when it still works (GOAWAY, close_notify), and
 * releases its resources; the client keeps its options and can open a new one. */
static void close_connection(hg_client *c) {
  if (c->fd >= 0 && c->ssl != NULL && !c->broken) {
    int64_t deadline = now_ms() + CLOSE_GRACE_MS;
    Hourglass__Rpc__V1__GoAway g = HOURGLASS__RPC__V1__GO_AWAY__INIT;
    g.code = HG_UNAVAILABLE;
    g.message = (char *)"client closing";
    buf out = {0};
    if (buf_append_message_frame(&out, FRAME_GOAWAY, 0, 0, &g.base)) send_buf(c, &out, deadline, NULL);
    buf_free(&out);
    if (!c->broken) {
      ERR_clear_error();
      SSL_shutdown(c->ssl);
      flush_tls(c, deadline, NULL);
    }
  }
  ERR_clear_error();
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  SSL_free(c->ssl); /* frees both BIOs */
  SSL_CTX_free(c->ctx);
  c->ssl = NULL;
  c->ctx = NULL;
  c->rbio = c->wbio = NULL;
  c->in_off = c->in_len = 0;
  c->broken = 1;
}

/* Opens a connection with the client's stored options: TCP, TLS, preface and SETTINGS. */
static int open_connection(hg_client *c, hg_status *st) {
  const hg_connect_options *o = &c->options;
  uint32_t connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  c->broken = 0;
  c->goaway = 0;
  c->goaway_last_stream_id = 0;
  c->next_stream_id = 1;
  c->last_stream_id = 0;
  c->in_off = c->in_len = 0;
  c->peer_keepalive_ms = 0;
  c->last_received_ms = now_ms();
  int rc = setup_tls(c, o, st);
  if (rc == HG_OK && c->user_id == NULL) {
    if (o->user_id != NULL) {
      c->user_id = strdup(o->user_id);
    } else {
      c->user_id = certificate_common_name(SSL_get_certificate(c->ssl));
      if (c->user_id == NULL) {
        rc = set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "no user_id given and %s has no common name",
                        o->cert_file);
      }
    }
    if (rc == HG_OK && c->user_id == NULL) rc = set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  }
  if (rc == HG_OK) {
    c->fd = tcp_connect(o->host, o->port, deadline_after(connect_ms), st);
    if (c->fd < 0) rc = st ? st->code : HG_UNAVAILABLE;
  }
  if (rc == HG_OK) rc = tls_handshake(c, deadline_after(connect_ms), st);
  if (rc == HG_OK) rc = exchange_settings(c, deadline_after(connect_ms), st);
  if (rc != HG_OK) {
    c->broken = 1;
    close_connection(c);
    return rc;
  }
  return ok_status(st);
}

static void free_options(hg_connect_options *o) {
  free((char *)o->host);
  free((char *)o->ca_file);
  free((char *)o->cert_file);
  free((char *)o->key_file);
  free((char *)o->user_id);
  memset(o, 0, sizeof *o);
}

static char *copy_or_null(const char *s) { return s ? strdup(s) : NULL; }

hg_client *hg_connect(const hg_connect_options *o, hg_status *st) {
  if (o == NULL || o->host == NULL || o->host[0] == '\0' || o->port == 0 || o->ca_file == NULL ||
      o->cert_file == NULL || o->key_file == NULL) {
    set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "host, port, ca_file, cert_file and key_file are required");
    return NULL;
  }
  hg_client *c = calloc(1, sizeof *c);
  if (c == NULL) {
    set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
    return NULL;
  }
  c->fd = -1;
  c->call_timeout_ms = o->call_timeout_ms;
  c->options = *o;
  c->options.host = copy_or_null(o->host);
  c->options.ca_file = copy_or_null(o->ca_file);
  c->options.cert_file = copy_or_null(o->cert_file);
  c->options.key_file = copy_or_null(o->key_file);
  c->options.user_id = copy_or_null(o->user_id);
  if (!c->options.host || !c->options.ca_file || !c->options.cert_file || !c->options.key_file ||
      (o->user_id && !c->options.user_id)) {
    set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
    hg_close(c);
    return NULL;
  }
  if (open_connection(c, st) != HG_OK) {
    hg_close(c);
    return NULL;
  }
  return c;
}

void hg_close(hg_client *c) {
  if (c == NULL) return;
  close_connection(c);
  free(c->in);
  free(c->user_id);
  free_options(&c->options);
  free(c);
}

int hg_is_usable(const hg_client *c) { return c != NULL && !c->broken && !c->goaway; }

/* ---- unary calls ---- */

/* Sends RESET(code, text) on a stream, best effort. */
static void send_reset(hg_client *c, uint32_t stream_id, int code, const char *text) {
  if (c->broken) return;
  Hourglass__Rpc__V1__Reset r = HOURGLASS__RPC__V1__RESET__INIT;
  r.code = (uint32_t)code;
  r.message = (char *)text;
  buf out = {0};
  if (buf_append_message_frame(&out, FRAME_RESET, 0, stream_id, &r.base)) {
    send_buf(c, &out, now_ms() + CLOSE_GRACE_MS, NULL);
  }
  buf_free(&out);
}

/*
 * Handles what arrived while no call was running (the server's PINGs, a GOAWAY, the connection
 * closing, late frames of finished streams) without waiting for anything.
 */
static void service_idle(hg_client *c) {
  hg_status quiet;
  while (!c->broken) {
    frame f;
    int rc = read_frame(c, now_ms(), &f, &quiet);
    if (rc != HG_OK) return; /* nothing more has arrived (deadline now), or the connection failed */
    switch (f.type) {
      case FRAME_PING:
        answer_ping(c, &f, now_ms() + CLOSE_GRACE_MS, &quiet);
        break;
      case FRAME_GOAWAY:
        take_goaway(c, &f, &quiet);
        break;
      case FRAME_SETTINGS:
        connection_error(c, HG_INTERNAL, "a second SETTINGS frame", &quiet);
        break;
      case FRAME_HEADERS:
      case FRAME_MESSAGE:
      case FRAME_TRAILERS:
      case FRAME_RESET:
      case FRAME_CREDIT:
        if (f.stream_id == 0 || (f.stream_id & 1u) == 0 || f.stream_id > c->last_stream_id) {
          connection_error(c, HG_INTERNAL, "frame for a stream that was never opened", &quiet);
        } else if (f.type == FRAME_CREDIT && f.length != 4) {
          connection_error(c, HG_INTERNAL, "CREDIT payload is not 4 bytes", &quiet);
        }
        break; /* a finished stream's late frame: ignored */
      default:
        break;
    }
  }
}

/* Makes sure there is a connection that can take a new call: answers what the server sent
 * meanwhile and, when the old connection failed or is going away, opens a new one. The request
 * has not been sent yet, so reconnecting is always safe. */
static int ready_for_call(hg_client *c, hg_status *st) {
  /* Read before service_idle, which reads (and answers) what waited, the server's PING too. */
  int64_t quiet_since = c->last_received_ms;
  if (!c->broken) service_idle(c);
  /* Quiet for a whole keepalive interval: the server's PING has gone unanswered meanwhile (this
   * client reads only during calls), and the server may be closing the connection right now,
   * with this call's request crossing the close. A fresh connection costs a handshake; a
   * request lost that way could not be told from one the server carried out. */
  if (!c->broken && c->peer_keepalive_ms > 0 && now_ms() - quiet_since >= (int64_t)c->peer_keepalive_ms) {
    close_connection(c);
  }
  if (!c->broken && !c->goaway && c->next_stream_id <= MAX_STREAM_ID) return HG_OK;
  close_connection(c);
  return open_connection(c, st);
}

/*
 * One unary call: HEADERS, the request as MESSAGE frame(s) with END_STREAM, then frames until
 * TRAILERS or RESET. On success *response / *response_len hold the single response message
 * (malloc'd, possibly zero bytes long; free it).
 */
static int unary_call(hg_client *c, const char *method, const ProtobufCMessage *request,
                      uint8_t **response, size_t *response_len, hg_status *st) {
  hg_status scratch;
  if (st == NULL) st = &scratch; /* the logic below reads back what it wrote */
  *response = NULL;
  *response_len = 0;
  int rc = ready_for_call(c, st);
  if (rc != HG_OK) return rc;
  int64_t deadline = deadline_after(c->call_timeout_ms);

  size_t request_len = protobuf_c_message_get_packed_size(request);
  if (request_len > c->peer_max_message_size) {
    return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_TOO_LARGE,
                      "request of %zu bytes is over the server's max_message_size %u", request_len,
                      (unsigned)c->peer_max_message_size);
  }
  uint8_t *request_bytes = malloc(request_len ? request_len : 1);
  if (request_bytes == NULL) return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  protobuf_c_message_pack(request, request_bytes);

  uint32_t sid = c->next_stream_id;
  c->next_stream_id += 2;
  c->last_stream_id = sid;

  Hourglass__Rpc__V1__RequestHeaders h = HOURGLASS__RPC__V1__REQUEST_HEADERS__INIT;
  h.method = (char *)method;
  h.timeout_micros = c->call_timeout_ms ? (uint64_t)c->call_timeout_ms * 1000u : 0;

  buf out = {0};
  int ok = buf_append_message_frame(&out, FRAME_HEADERS, 0, sid, &h.base);
  if (request_len == 0) {
    /* An empty message, then a bare half-close (§8.2). */
    ok = ok && buf_append_frame(&out, FRAME_MESSAGE, 0, sid, NULL, 0);
    ok = ok && buf_append_frame(&out, FRAME_MESSAGE, FLAG_END_STREAM, sid, NULL, 0);
  } else {
    size_t off = 0;
    while (ok && off < request_len) {
      size_t n = request_len - off;
      uint8_t flags = FLAG_END_STREAM;
      if (n > c->peer_max_frame_size) {
        n = c->peer_max_frame_size;
        flags = FLAG_MORE;
      }
      ok = buf_append_frame(&out, FRAME_MESSAGE, flags, sid, request_bytes + off, n);
      off += n;
    }
  }
  free(request_bytes);
  if (!ok) {
    buf_free(&out);
    return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  }
  rc = send_buf(c, &out, deadline, st);
  buf_free(&out);
  if (rc != HG_OK) {
    if (rc == HG_DEADLINE_EXCEEDED) send_reset(c, sid, HG_DEADLINE_EXCEEDED, "deadline exceeded");
    return rc;
  }

  /* Receive. */
  uint64_t send_credit = c->peer_initial_stream_credit - 1; /* bookkeeping only: unary sends one */
  (void)send_credit;
  int got_headers = 0;
  int messages = 0;
  buf pending = {0}; /* the message being reassembled */
  int fragment_pending = 0;
  buf first = {0};   /* the first whole response message */
  int discarding = 0;

  for (;;) {
    frame f;
    rc = read_frame(c, deadline, &f, st);
    if (rc != HG_OK) {
      if (rc == HG_DEADLINE_EXCEEDED && st->local == HG_LOCAL_DEADLINE && !c->broken) {
        send_reset(c, sid, HG_DEADLINE_EXCEEDED, "deadline exceeded");
        set_status(st, HG_DEADLINE_EXCEEDED, HG_LOCAL_DEADLINE, "deadline exceeded after %u ms",
                   (unsigned)c->call_timeout_ms);
      } else if (rc == HG_UNAVAILABLE && st->local == HG_LOCAL_CLOSED) {
        set_status(st, HG_UNAVAILABLE, HG_LOCAL_CLOSED, "the connection closed before the call finished");
      }
      goto done;
    }

    switch (f.type) {
      case FRAME_SETTINGS:
        rc = connection_error(c, HG_INTERNAL, "a second SETTINGS frame", st);
        goto done;
      case FRAME_PING:
        if ((rc = answer_ping(c, &f, deadline, st)) != HG_OK) goto done;
        continue;
      case FRAME_PONG:
        continue;
      case FRAME_GOAWAY:
        if ((rc = take_goaway(c, &f, st)) != HG_OK) goto done;
        if (sid > c->goaway_last_stream_id) {
          rc = set_status(st, HG_UNAVAILABLE, HG_LOCAL_GOAWAY,
                          "the server is going away and did not process the call; retry on a new connection");
          goto done;
        }
        continue;
      case FRAME_HEADERS:
      case FRAME_MESSAGE:
      case FRAME_TRAILERS:
      case FRAME_RESET:
      case FRAME_CREDIT:
        break;
      default:
        continue; /* unknown frame types are ignored (§4.3) */
    }

    /* Stream frames. */
    if (f.stream_id == 0) {
      rc = connection_error(c, HG_INTERNAL, "stream frame on stream 0", st);
      goto done;
    }
    if ((f.stream_id & 1u) == 0 || f.stream_id > c->last_stream_id) {
      rc = connection_error(c, HG_INTERNAL, "frame for a stream that was never opened", st);
      goto done;
    }
    if (f.type == FRAME_CREDIT && f.length != 4) {
      rc = connection_error(c, HG_INTERNAL, "CREDIT payload is not 4 bytes", st);
      goto done;
    }
    if (f.stream_id != sid) continue; /* an earlier, closed stream: ignore */

    if (f.type == FRAME_CREDIT) {
      if (f.length != 4) {
        rc = connection_error(c, HG_INTERNAL, "CREDIT payload is not 4 bytes", st);
        goto done;
      }
      uint32_t n = (uint32_t)f.payload[0] << 24 | (uint32_t)f.payload[1] << 16 |
                   (uint32_t)f.payload[2] << 8 | f.payload[3];
      if (n == 0 || send_credit + n > 0x7FFFFFFFu) {
        send_reset(c, sid, HG_INTERNAL, "bad CREDIT count");
        rc = set_status(st, HG_INTERNAL, HG_LOCAL_PROTOCOL, "protocol error: bad CREDIT count");
        goto done;
      }
      send_credit += n;
      continue;
    }
    if (f.type == FRAME_HEADERS) {
      if (got_headers || messages > 0 || fragment_pending) {
        rc = connection_error(c, HG_INTERNAL, "response HEADERS twice or after a message", st);
        goto done;
      }
      Hourglass__Rpc__V1__ResponseHeaders *rh =
          hourglass__rpc__v1__response_headers__unpack(NULL, f.length, f.payload);
      if (rh == NULL) {
        rc = connection_error(c, HG_INTERNAL, "response HEADERS payload does not parse", st);
        goto done;
      }
      hourglass__rpc__v1__response_headers__free_unpacked(rh, NULL); /* metadata is not exposed */
      got_headers = 1;
      continue;
    }
    if (f.type == FRAME_MESSAGE) {
      if (discarding) {
        if (!(f.flags & FLAG_MORE)) discarding = 0;
        continue;
      }
      if (pending.len + f.length > MY_MAX_MESSAGE_SIZE) {
        send_reset(c, sid, HG_RESOURCE_EXHAUSTED, "message larger than max_message_size");
        rc = set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_TOO_LARGE,
                        "the response is larger than max_message_size (%u bytes)", MY_MAX_MESSAGE_SIZE);
        goto done;
      }
      if (!buf_append(&pending, f.payload, f.length)) {
        send_reset(c, sid, HG_RESOURCE_EXHAUSTED, "out of memory");
        rc = set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
        goto done;
      }
      if (f.flags & FLAG_MORE) {
        fragment_pending = 1;
        continue;
      }
      fragment_pending = 0;
      messages++;
      if (messages == 1) {
        first = pending;
        pending = (buf){0};
      } else {
        pending.len = 0;
      }
      continue;
    }
    if (f.type == FRAME_TRAILERS) {
      if (fragment_pending) {
        rc = connection_error(c, HG_INTERNAL, "TRAILERS in the middle of a fragmented message", st);
        goto done;
      }
      Hourglass__Rpc__V1__Trailers *t = hourglass__rpc__v1__trailers__unpack(NULL, f.length, f.payload);
      if (t == NULL) {
        rc = connection_error(c, HG_INTERNAL, "TRAILERS payload does not parse", st);
        goto done;
      }
      int code = t->code > 16 ? HG_UNKNOWN : (int)t->code;
      if (code != HG_OK) {
        rc = set_status(st, code, HG_LOCAL_NONE, "%s", t->message ? t->message : "");
      } else if (messages != 1) {
        rc = set_status(st, HG_INTERNAL, HG_LOCAL_PROTOCOL,
                        "protocol error: a unary call ended OK with %d response messages", messages);
      } else {
        rc = HG_OK;
      }
      hourglass__rpc__v1__trailers__free_unpacked(t, NULL);
      goto done;
    }
    /* FRAME_RESET */
    Hourglass__Rpc__V1__Reset *r = hourglass__rpc__v1__reset__unpack(NULL, f.length, f.payload);
    if (r == NULL) {
      rc = connection_error(c, HG_INTERNAL, "RESET payload does not parse", st);
      goto done;
    }
    int code = r->code > 16 ? HG_UNKNOWN : (int)r->code;
    if (code == HG_OK) code = HG_UNKNOWN;
    rc = set_status(st, code, HG_LOCAL_NONE, "%s", r->message ? r->message : "");
    hourglass__rpc__v1__reset__free_unpacked(r, NULL);
    goto done;
  }

done:
  buf_free(&pending);
  if (rc == HG_OK) {
    *response = first.p ? first.p : malloc(1);
    *response_len = first.len;
    if (*response == NULL) return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
    return ok_status(st);
  }
  buf_free(&first);
  return rc;
}

/* ---- TaskService ---- */

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

static int64_t timestamp_us(const Google__Protobuf__Timestamp *t, int *has) {
  *has = t != NULL;
  if (t == NULL) return 0;
  /* Clamped to what microseconds since the epoch can hold (about ±292,000 years): a server's
   * value beyond it must not overflow. */
  const int64_t limit = INT64_MAX / 1000000 - 1;
  int64_t seconds = t->seconds > limit ? limit : t->seconds < -limit ? -limit : t->seconds;
  return seconds * 1000000 + t->nanos / 1000;
}

static void format_instant(const Google__Protobuf__Timestamp *t, char *out, size_t size) {
  if (t == NULL) {
    snprintf(out, size, "?");
    return;
  }
  time_t secs = (time_t)t->seconds;
  struct tm tm;
  if (gmtime_r(&secs, &tm) == NULL) {
    snprintf(out, size, "%lld", (long long)t->seconds);
    return;
  }
  strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A one-line description of a schedule. */
static char *describe_schedule(const Hourglass__V1__ScheduleSpec *s) {
  char text[512];
  char when[64];
  if (s == NULL) return strdup("");
  switch (s->kind_case) {
    case HOURGLASS__V1__SCHEDULE_SPEC__KIND_CRON:
      snprintf(text, sizeof text, "cron %s", s->cron && s->cron->expression ? s->cron->expression : "");
      break;
    case HOURGLASS__V1__SCHEDULE_SPEC__KIND_ONCE:
      if (s->once && s->once->at_case == HOURGLASS__V1__ONCE_SCHEDULE__AT_LOCAL_DATE_TIME) {
        snprintf(text, sizeof text, "once at %s", s->once->local_date_time);
      } else {
        format_instant(s->once ? s->once->instant : NULL, when, sizeof when);
        snprintf(text, sizeof text, "once at %s", when);
      }
      break;
    case HOURGLASS__V1__SCHEDULE_SPEC__KIND_INTERVAL:
      snprintf(text, sizeof text, "every %llds",
               (long long)(s->interval && s->interval->every ? s->interval->every->seconds : 0));
      break;
    default:
      snprintf(text, sizeof text, "unspecified");
      break;
  }
  if (s->time_zone != NULL && s->time_zone[0] != '\0') {
    size_t n = strlen(text);
    snprintf(text + n, sizeof text - n, " in %s", s->time_zone);
  }
  return strdup(text);
}

static void task_clear(hg_task *t) {
  free(t->task_id);
  free(t->name);
  free(t->operator_name);
  free(t->schedule);
  free(t->blob_sha256);
  for (size_t i = 0; i < t->n_arguments; i++) free(t->arguments[i]);
  free(t->arguments);
  memset(t, 0, sizeof *t);
}

/* Copies a TaskInfo into `t` (zeroed first); 0 when out of memory (then `t` is cleared). */
static int task_from_info(hg_task *t, const Hourglass__V1__TaskInfo *info) {
  memset(t, 0, sizeof *t);
  t->task_id = dup_or_empty(info->task_id);
  t->name = dup_or_empty(info->name);
  t->operator_name = dup_or_empty(info->operator_);
  t->blob_sha256 = dup_or_empty(info->blob_sha256);
  t->schedule = describe_schedule(info->schedule);
  t->status = (int)info->task_status;
  t->last_run_status = (int)info->last_run_status;
  t->is_recurring = info->is_recurring ? 1 : 0;
  t->priority = info->priority;
  t->runs_completed = info->runs_completed;
  t->created_us = timestamp_us(info->created, &t->has_created);
  t->next_execution_us = timestamp_us(info->next_execution, &t->has_next_execution);
  t->last_executed_us = timestamp_us(info->last_executed, &t->has_last_executed);
  int ok = t->task_id && t->name && t->operator_name && t->blob_sha256 && t->schedule;
  if (ok && info->n_arguments > 0) {
    t->arguments = calloc(info->n_arguments, sizeof *t->arguments);
    ok = t->arguments != NULL;
    for (size_t i = 0; ok && i < info->n_arguments; i++) {
      t->arguments[i] = dup_or_empty(info->arguments[i]);
      t->n_arguments = i + 1;
      ok = t->arguments[i] != NULL;
    }
  }
  if (!ok) task_clear(t);
  return ok;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 1;
}

/*
 * Reads "YYYY-MM-DDTHH:MM[:SS[.fff]]" with an optional "Z" or "+HH:MM"/"-HH:MM". Returns 2 and
 * fills `ts` when there is an offset (an instant), 1 when there is none (a local date-time,
 * sent as text), 0 when the text is malformed.
 */
static int parse_at(const char *s, Google__Protobuf__Timestamp *ts) {
  int y, mo, d, h, mi, sec = 0;
  int32_t nanos = 0;
  if (strlen(s) < 16 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
      !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s + 11, 2, &h) ||
      s[13] != ':' || !digits(s + 14, 2, &mi)) {
    return 0;
  }
  const char *p = s + 16;
  if (*p == ':') {
    if (!digits(p + 1, 2, &sec)) return 0;
    p += 3;
    if (*p == '.') {
      p++;
      int32_t scale = 100000000;
      if (*p < '0' || *p > '9') return 0;
      while (*p >= '0' && *p <= '9') {
        nanos += (int32_t)(*p - '0') * scale;
        scale /= 10;
        p++;
      }
    }
  }
  static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo < 1 || mo > 12 || h > 23 || mi > 59 || sec > 59) return 0;
  if (d < 1 || d > month_days[mo - 1] + (mo == 2 && leap)) return 0; /* no 31 February */
  int offset_min = 0;
  if (*p == '\0') return 1;
  if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
    offset_min = 0;
  } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
    int oh, om;
    if (!digits(p + 1, 2, &oh) || !digits(p + 4, 2, &om) || oh > 23 || om > 59) return 0;
    offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
  } else {
    return 0;
  }
  ts->seconds = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec -
                (int64_t)offset_min * 60;
  ts->nanos = nanos;
  return 2;
}

int hg_schedule(hg_client *c, const hg_schedule_request *q, char **task_id_out, int64_t *next_execution_us,
                hg_status *st) {
  if (task_id_out != NULL) *task_id_out = NULL;
  if (next_execution_us != NULL) *next_execution_us = 0;
  if (c == NULL || q == NULL || task_id_out == NULL) {
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "client, request and task_id_out are required");
  }
  if (q->blob == NULL && q->blob_len > 0) {
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "blob is NULL but blob_len is not 0");
  }
  if (q->n_arguments > 0 && q->arguments == NULL) {
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "arguments is NULL but n_arguments is not 0");
  }
  for (size_t i = 0; i < q->n_arguments; i++) {
    if (q->arguments[i] == NULL) return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "argument %zu is NULL", i);
  }

  Hourglass__V1__ScheduleSpec spec = HOURGLASS__V1__SCHEDULE_SPEC__INIT;
  Hourglass__V1__CronSchedule cron = HOURGLASS__V1__CRON_SCHEDULE__INIT;
  Hourglass__V1__OnceSchedule once = HOURGLASS__V1__ONCE_SCHEDULE__INIT;
  Hourglass__V1__IntervalSchedule interval = HOURGLASS__V1__INTERVAL_SCHEDULE__INIT;
  Google__Protobuf__Timestamp instant = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  Google__Protobuf__Duration every = GOOGLE__PROTOBUF__DURATION__INIT;
  spec.time_zone = (char *)(q->time_zone ? q->time_zone : "");
  switch (q->kind) {
    case HG_SCHEDULE_CRON:
      if (q->cron == NULL || q->cron[0] == '\0') {
        return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "a cron schedule needs `cron`");
      }
      cron.expression = (char *)q->cron;
      spec.kind_case = HOURGLASS__V1__SCHEDULE_SPEC__KIND_CRON;
      spec.cron = &cron;
      break;
    case HG_SCHEDULE_AT: {
      int kind = q->at ? parse_at(q->at, &instant) : 0;
      if (kind == 0) {
        return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT,
                          "`at` must be RFC 3339 (YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]): %s", q->at ? q->at : "(null)");
      }
      if (kind == 2) {
        once.at_case = HOURGLASS__V1__ONCE_SCHEDULE__AT_INSTANT;
        once.instant = &instant;
      } else {
        once.at_case = HOURGLASS__V1__ONCE_SCHEDULE__AT_LOCAL_DATE_TIME;
        once.local_date_time = (char *)q->at;
      }
      spec.kind_case = HOURGLASS__V1__SCHEDULE_SPEC__KIND_ONCE;
      spec.once = &once;
      break;
    }
    case HG_SCHEDULE_EVERY:
      if (q->every_seconds == 0 || q->every_seconds > (uint64_t)INT64_MAX) {
        return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "every_seconds must be at least 1");
      }
      every.seconds = (int64_t)q->every_seconds;
      interval.every = &every;
      spec.kind_case = HOURGLASS__V1__SCHEDULE_SPEC__KIND_INTERVAL;
      spec.interval = &interval;
      break;
    default:
      return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "unknown schedule kind %d", (int)q->kind);
  }

  Hourglass__V1__ScheduleRequest r = HOURGLASS__V1__SCHEDULE_REQUEST__INIT;
  r.user_id = c->user_id;
  r.task_blob.data = (uint8_t *)q->blob;
  r.task_blob.len = q->blob_len;
  r.schedule = &spec;
  r.is_recurring = q->is_recurring ? 1 : 0;
  r.operator_ = (char *)(q->operator_name ? q->operator_name : "");
  r.n_arguments = q->n_arguments;
  r.arguments = (char **)q->arguments;
  r.name = (char *)(q->name ? q->name : "");
  r.priority = q->priority;
  r.idempotency_key = (char *)(q->idempotency_key ? q->idempotency_key : "");

  uint8_t *bytes;
  size_t len;
  int rc = unary_call(c, "/hourglass.v1.TaskService/Schedule", &r.base, &bytes, &len, st);
  if (rc != HG_OK) return rc;
  Hourglass__V1__ScheduleResponse *resp = hourglass__v1__schedule_response__unpack(NULL, len, bytes);
  free(bytes);
  if (resp == NULL) return set_status(st, HG_INTERNAL, HG_LOCAL_PROTOCOL, "the ScheduleResponse does not parse");
  *task_id_out = dup_or_empty(resp->task_id);
  if (next_execution_us != NULL) {
    int has;
    *next_execution_us = timestamp_us(resp->next_execution, &has);
  }
  hourglass__v1__schedule_response__free_unpacked(resp, NULL);
  if (*task_id_out == NULL) return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  return ok_status(st);
}

int hg_get(hg_client *c, const char *task_id, hg_task **task_out, hg_status *st) {
  if (task_out != NULL) *task_out = NULL;
  if (c == NULL || task_id == NULL || task_out == NULL) {
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "client, task_id and task_out are required");
  }
  Hourglass__V1__GetRequest r = HOURGLASS__V1__GET_REQUEST__INIT;
  r.user_id = c->user_id;
  r.task_id = (char *)task_id;
  uint8_t *bytes;
  size_t len;
  int rc = unary_call(c, "/hourglass.v1.TaskService/Get", &r.base, &bytes, &len, st);
  if (rc != HG_OK) return rc;
  Hourglass__V1__GetResponse *resp = hourglass__v1__get_response__unpack(NULL, len, bytes);
  free(bytes);
  if (resp == NULL) return set_status(st, HG_INTERNAL, HG_LOCAL_PROTOCOL, "the GetResponse does not parse");
  if (resp->task == NULL) {
    hourglass__v1__get_response__free_unpacked(resp, NULL);
    return set_status(st, HG_INTERNAL, HG_LOCAL_PROTOCOL, "the GetResponse has no task");
  }
  hg_task *t = malloc(sizeof *t);
  if (t == NULL || !task_from_info(t, resp->task)) {
    free(t);
    hourglass__v1__get_response__free_unpacked(resp, NULL);
    return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  }
  hourglass__v1__get_response__free_unpacked(resp, NULL);
  *task_out = t;
  return ok_status(st);
}

int hg_list(hg_client *c, const char *page_token, uint32_t page_size, hg_task_list **list_out, hg_status *st) {
  if (list_out != NULL) *list_out = NULL;
  if (c == NULL || list_out == NULL) {
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "client and list_out are required");
  }
  Hourglass__V1__ListRequest r = HOURGLASS__V1__LIST_REQUEST__INIT;
  r.user_id = c->user_id;
  r.page_size = page_size;
  r.page_token = (char *)(page_token ? page_token : "");
  uint8_t *bytes;
  size_t len;
  int rc = unary_call(c, "/hourglass.v1.TaskService/List", &r.base, &bytes, &len, st);
  if (rc != HG_OK) return rc;
  Hourglass__V1__ListResponse *resp = hourglass__v1__list_response__unpack(NULL, len, bytes);
  free(bytes);
  if (resp == NULL) return set_status(st, HG_INTERNAL, HG_LOCAL_PROTOCOL, "the ListResponse does not parse");
  hg_task_list *l = calloc(1, sizeof *l);
  int ok = l != NULL;
  if (ok) {
    l->next_page_token = dup_or_empty(resp->next_page_token);
    ok = l->next_page_token != NULL;
  }
  if (ok && resp->n_tasks > 0) {
    l->tasks = calloc(resp->n_tasks, sizeof *l->tasks);
    ok = l->tasks != NULL;
    for (size_t i = 0; ok && i < resp->n_tasks; i++) {
      ok = task_from_info(&l->tasks[i], resp->tasks[i]);
      if (ok) l->count = i + 1;
    }
  }
  hourglass__v1__list_response__free_unpacked(resp, NULL);
  if (!ok) {
    hg_task_list_free(l);
    return set_status(st, HG_RESOURCE_EXHAUSTED, HG_LOCAL_NOMEM, "out of memory");
  }
  *list_out = l;
  return ok_status(st);
}

int hg_delete(hg_client *c, const char *task_id, int cancel_running, int *cancelled_run_out, hg_status *st) {
  if (cancelled_run_out != NULL) *cancelled_run_out = 0;
  if (c == NULL || task_id == NULL) {
    return set_status(st, HG_INVALID_ARGUMENT, HG_LOCAL_ARGUMENT, "client and task_id are required");
  }
  Hourglass__V1__DeleteRequest r = HOURGLASS__V1__DELETE_REQUEST__INIT;
  r.user_id = c->user_id;
  r.task_id = (char *)task_id;
  r.cancel_running = cancel_running ? 1 : 0;
  uint8_t *bytes;
  size_t len;
  int rc = unary_call(c, "/hourglass.v1.TaskService/Delete", &r.base, &bytes, &len, st);
  if (rc != HG_OK) return rc;
  Hourglass__V1__DeleteResponse *resp = hourglass__v1__delete_response__unpack(NULL, len, bytes);
  free(bytes);
  if (resp == NULL) return set_status(st, HG_INTERNAL, HG_LOCAL_PROTOCOL, "the DeleteResponse does not parse");
  if (cancelled_run_out != NULL) *cancelled_run_out = resp->cancelled_run ? 1 : 0;
  hourglass__v1__delete_response__free_unpacked(resp, NULL);
  return ok_status(st);
}

void hg_task_free(hg_task *t) {
  if (t == NULL) return;
  task_clear(t);
  free(t);
}

void hg_task_list_free(hg_task_list *l) {
  if (l == NULL) return;
  for (size_t i = 0; i < l->count; i++) task_clear(&l->tasks[i]);
  free(l->tasks);
  free(l->next_page_token);
  free(l);
}

void hg_string_free(char *s) { free(s); }
