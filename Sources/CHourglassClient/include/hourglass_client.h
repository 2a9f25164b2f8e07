/*
 * hourglass_client.h — a small C client for Hourglass coordinators.
 *
 * The client speaks the hourglass/1 protocol (docs/protocol.md) over TLS 1.3 with mutual
 * authentication, and calls four of the unary methods of hourglass.v1.TaskService: Schedule,
 * Get, List and Delete (not ListRuns). It is built on OpenSSL (libssl, libcrypto) and
 * protobuf-c.
 *
 * General rules, true of every function below unless its comment says otherwise:
 *
 *  - Errors. Functions that can fail take an `hg_status *status` (which may be NULL when the
 *    caller does not care) and return the status code: 0 (HG_OK) on success, otherwise one of
 *    the other 16 gRPC codes below. `status->code` is the same number; `status->message` is a
 *    NUL-terminated human-readable text; `status->local` says whether the failure was detected
 *    by this library (HG_LOCAL_*) rather than reported by the server (HG_LOCAL_NONE).
 *  - Ownership. Everything the library returns through an `out` pointer is owned by the caller
 *    and freed with the matching free function (hg_task_free, hg_task_list_free,
 *    hg_string_free, hg_close). On failure the `out` pointer is set to NULL and nothing needs
 *    freeing. Inputs are only read, never kept: they may be freed as soon as a call returns.
 *  - Threads. There is no global state. An hg_client is thread-compatible: use it from one
 *    thread at a time (calls on one connection are sequential and blocking); different
 *    connections may be used on different threads at once.
 *  - Blocking. Every call blocks until it has a result or its deadline passes. Deadlines are
 *    enforced with poll(); signals are not used (SIGPIPE is avoided with MSG_NOSIGNAL). With no
 *    call deadline (call_timeout_ms 0), a server that vanishes without closing is noticed by
 *    TCP keepalive: the call fails after about a minute and a half. Resolving the host name
 *    (getaddrinfo) has no deadline of its own.
 *  - Reconnecting. Before sending a call, the client answers what the server sent while it was
 *    idle (PING, GOAWAY) and, when the connection has failed, been closed by the server (for
 *    example after unanswered keepalive PINGs on an idle connection) or received GOAWAY, it
 *    connects again with the options given to hg_connect (which it copied). It also connects
 *    again when the connection has been quiet for the server's keepalive interval (from its
 *    SETTINGS): the server may be closing it just then, and a request crossing that close could
 *    not be told from one the server carried out. Reconnecting reads the CA, certificate and
 *    key files again; the key file must not be encrypted. A call that fails
 *    after its request was sent is never retried by the library: it reports UNAVAILABLE (or
 *    its status), and only GOAWAY-refused calls (HG_LOCAL_GOAWAY) are known not to have run.
 */
#ifndef HOURGLASS_CLIENT_H
#define HOURGLASS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: the 17 gRPC codes, with the same numbers and meanings (docs/protocol.md §10). */
enum {
  HG_OK = 0,
  HG_CANCELLED = 1,
  HG_UNKNOWN = 2,
  HG_INVALID_ARGUMENT = 3,
  HG_DEADLINE_EXCEEDED = 4,
  HG_NOT_FOUND = 5,
  HG_ALREADY_EXISTS = 6,
  HG_PERMISSION_DENIED = 7,
  HG_RESOURCE_EXHAUSTED = 8,
  HG_FAILED_PRECONDITION = 9,
  HG_ABORTED = 10,
  HG_OUT_OF_RANGE = 11,
  HG_UNIMPLEMENTED = 12,
  HG_INTERNAL = 13,
  HG_UNAVAILABLE = 14,
  HG_DATA_LOSS = 15,
  HG_UNAUTHENTICATED = 16
};

/* Where a failure was detected, when this library detected it (hg_status.local). The status
 * code is still one of the gRPC codes above (shown in brackets). */
enum {
  HG_LOCAL_NONE = 0,          /* the server reported the status (TRAILERS or RESET) */
  HG_LOCAL_ARGUMENT = 1001,   /* a bad argument to this library [INVALID_ARGUMENT] */
  HG_LOCAL_RESOLVE = 1002,    /* the host name did not resolve [UNAVAILABLE] */
  HG_LOCAL_CONNECT = 1003,    /* TCP connect failed or timed out [UNAVAILABLE / DEADLINE_EXCEEDED] */
  HG_LOCAL_TLS = 1004,        /* TLS setup, handshake or certificate check failed [UNAVAILABLE] */
  HG_LOCAL_CLOSED = 1005,     /* the connection closed or broke [UNAVAILABLE] */
  HG_LOCAL_DEADLINE = 1006,   /* the call's deadline passed on this side [DEADLINE_EXCEEDED] */
  HG_LOCAL_PROTOCOL = 1007,   /* the server broke hourglass/1 [INTERNAL or the violation's code] */
  HG_LOCAL_GOAWAY = 1008,     /* the server is going away; the call was not processed [UNAVAILABLE] */
  HG_LOCAL_NOMEM = 1009,      /* out of memory [RESOURCE_EXHAUSTED] */
  HG_LOCAL_TOO_LARGE = 1010   /* a message over the peer's size limit [RESOURCE_EXHAUSTED] */
};

/* The outcome of a call. Plain data: declare one on the stack and pass its address. */
typedef struct hg_status {
  int code;           /* HG_OK or a gRPC status code */
  int local;          /* HG_LOCAL_NONE or an HG_LOCAL_* value */
  char message[256];  /* NUL-terminated; empty on success; truncated if longer */
} hg_status;

/* The name of a status code, e.g. "DEADLINE_EXCEEDED"; "UNKNOWN" for numbers it does not know.
 * Returns a static string: do not free. */
const char *hg_status_code_name(int code);

/* A connection to a coordinator. Opaque; made by hg_connect, freed by hg_close. */
typedef struct hg_client hg_client;

/* What hg_connect needs. Zero-initialise, then fill in. hg_connect copies it (for reconnecting);
 * the caller's strings may be freed once it returns. */
typedef struct hg_connect_options {
  const char *host;            /* DNS name or IP address; the server certificate must match it */
  uint16_t port;
  const char *ca_file;         /* PEM: the private CA, the only trust root */
  const char *cert_file;       /* PEM: this client's certificate chain (CN = user, OU = user) */
  const char *key_file;        /* PEM: its private key */
  const char *user_id;         /* NULL: the CN of cert_file; sent as user_id in every request */
  uint32_t connect_timeout_ms; /* TCP connect, then TLS + SETTINGS, each; 0 = 10 000 */
  uint32_t call_timeout_ms;    /* deadline of every call, sent to the server too; 0 = none */
} hg_connect_options;

/* Connects: TCP (TCP_NODELAY), TLS 1.3 only with ALPN "hourglass/1", the server certificate
 * verified against ca_file and `host` (DNS or IP SAN), this client's certificate presented;
 * then the connection preface and the SETTINGS exchange. Returns a new client, owned by the
 * caller and freed with hg_close, or NULL with `status` set (UNAVAILABLE for resolution,
 * connection and TLS failures, including a server certificate from another CA or a client
 * certificate the server refused; DEADLINE_EXCEEDED when connect_timeout_ms passed;
 * INVALID_ARGUMENT for missing options or unreadable files). */
hg_client *hg_connect(const hg_connect_options *options, hg_status *status);

/* Sends GOAWAY, closes the connection and frees the client and everything it owns. Objects
 * returned by earlier calls (tasks, lists, strings) stay valid. Accepts NULL. */
void hg_close(hg_client *client);

/* Whether the current connection can still carry calls (1) or has failed or been told to go
 * away by the server (0). Informative only: the next call opens a new connection by itself
 * (see "Reconnecting" above). */
int hg_is_usable(const hg_client *client);

/* Kinds of schedule (one per request). */
typedef enum hg_schedule_kind {
  HG_SCHEDULE_CRON = 1,   /* `cron`: a cron expression, read in time_zone */
  HG_SCHEDULE_AT = 2,     /* `at`: once; RFC 3339 with an offset ("2030-01-01T09:00:00Z") is an
                             instant, without one ("2030-01-01T09:00") a local time in time_zone */
  HG_SCHEDULE_EVERY = 3   /* `every_seconds`: an interval, anchored at the time of scheduling */
} hg_schedule_kind;

/* A Schedule request. Zero-initialise, then fill in. Only read during hg_schedule. */
typedef struct hg_schedule_request {
  const uint8_t *blob;           /* the binary to run (may be NULL when blob_len is 0) */
  size_t blob_len;
  hg_schedule_kind kind;
  const char *cron;              /* for HG_SCHEDULE_CRON */
  const char *at;                /* for HG_SCHEDULE_AT */
  uint64_t every_seconds;        /* for HG_SCHEDULE_EVERY; at least 1 */
  const char *time_zone;         /* IANA zone; NULL or "" = UTC */
  int is_recurring;              /* 0 makes a cron or interval schedule fire only once */
  const char *name;              /* label; may be NULL */
  const char *operator_name;     /* executor operator; NULL = "exec" */
  const char *const *arguments;  /* argv for the binary; n_arguments entries */
  size_t n_arguments;
  int32_t priority;              /* -100 ... 100 */
  const char *idempotency_key;   /* NULL = none; a retry with the same key returns the same id */
} hg_schedule_request;

/* Task states and run states, as in proto/hourglass/v1/tasks.proto. */
typedef enum hg_task_status {
  HG_TASK_UNSPECIFIED = 0, HG_TASK_SCHEDULED = 1, HG_TASK_RUNNING = 2, HG_TASK_RETRYING = 3,
  HG_TASK_SUCCEEDED = 4, HG_TASK_FAILED = 5, HG_TASK_DELETED = 6, HG_TASK_PAUSED = 7
} hg_task_status;

typedef enum hg_run_status {
  HG_RUN_UNSPECIFIED = 0, HG_RUN_PENDING = 1, HG_RUN_RUNNING = 2, HG_RUN_SUCCEEDED = 3,
  HG_RUN_FAILED = 4, HG_RUN_DEAD = 5, HG_RUN_CANCELLED = 6, HG_RUN_SKIPPED = 7,
  HG_RUN_TIMED_OUT = 8, HG_RUN_LOST = 9
} hg_run_status;

/* Names such as "SCHEDULED" / "SUCCEEDED"; static strings, do not free. */
const char *hg_task_status_name(int status);
const char *hg_run_status_name(int status);

/* A task as the server describes it. Every string is non-NULL (possibly empty). Times are
 * microseconds since 1970-01-01T00:00:00Z, valid when the matching has_ flag is 1. */
typedef struct hg_task {
  char *task_id;
  int status;                 /* hg_task_status */
  int last_run_status;        /* hg_run_status */
  char *name;
  char *operator_name;
  char *schedule;             /* a one-line description, e.g. "cron 0 3 * * * in Europe/Paris" */
  int is_recurring;
  int32_t priority;
  uint32_t runs_completed;
  char *blob_sha256;          /* hex */
  int has_created, has_next_execution, has_last_executed;
  int64_t created_us, next_execution_us, last_executed_us;
  size_t n_arguments;
  char **arguments;
} hg_task;

/* One page of tasks. */
typedef struct hg_task_list {
  size_t count;
  hg_task *tasks;             /* `count` tasks (an array; NULL when count is 0) */
  char *next_page_token;      /* "" on the last page; pass it to hg_list for the next page */
} hg_task_list;

/* Schedules a task. On success stores the new task's id in *task_id_out (free it with
 * hg_string_free) and, when next_execution_us is not NULL, the first fire time in
 * microseconds since the epoch (0 if the server sent none). */
int hg_schedule(hg_client *client, const hg_schedule_request *request, char **task_id_out,
                int64_t *next_execution_us, hg_status *status);

/* Gets one of the caller's tasks. On success *task_out is a new task (free with hg_task_free).
 * NOT_FOUND when it does not exist or belongs to someone else. */
int hg_get(hg_client *client, const char *task_id, hg_task **task_out, hg_status *status);

/* Lists the caller's tasks, one page at a time: page_token NULL or "" for the first page,
 * then the previous page's next_page_token; page_size 0 = the server's default. On success
 * *list_out is a new list (free with hg_task_list_free). */
int hg_list(hg_client *client, const char *page_token, uint32_t page_size, hg_task_list **list_out,
            hg_status *status);

/* Deletes one of the caller's tasks. cancel_running != 0 also cancels a run in progress
 * (otherwise such a task is refused with FAILED_PRECONDITION). When cancelled_run_out is not
 * NULL it receives 1 if a run was cancelled. */
int hg_delete(hg_client *client, const char *task_id, int cancel_running, int *cancelled_run_out,
              hg_status *status);

/* Free functions; each accepts NULL. */
void hg_task_free(hg_task *task);
void hg_task_list_free(hg_task_list *list);
void hg_string_free(char *string);

#ifdef __cplusplus
}
#endif

#endif /* HOURGLASS_CLIENT_H */
