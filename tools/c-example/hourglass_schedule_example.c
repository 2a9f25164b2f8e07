/*
 * hourglass_schedule_example — schedule a binary from C and print its status.
 *
 *   hourglass_schedule_example HOST PORT CA_PEM CERT_PEM KEY_PEM BINARY [CRON]
 *
 * Connects with mutual TLS, schedules BINARY (read from disk) on the cron expression CRON
 * (default "*\/5 * * * *"), gets the task and prints it, lists the caller's tasks page by page,
 * then deletes the task. Exit status 0 when every call succeeded.
 * Build: see docs/c-client.md (tools/c-client-check.sh builds it).
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hourglass_client.h"

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  unsigned char *data = NULL;
  size_t size = 0, cap = 0;
  for (;;) {
    if (size == cap) {
      cap = cap ? cap * 2 : 65536;
      unsigned char *p = realloc(data, cap);
      if (p == NULL) {
        free(data);
        fclose(f);
        return NULL;
      }
      data = p;
    }
    size_t n = fread(data + size, 1, cap - size, f);
    size += n;
    if (n == 0) break;
  }
  fclose(f);
  *len = size;
  return data;
}

/* Microseconds since the epoch as RFC 3339 UTC. */
static const char *rfc3339(int64_t us, char *out, size_t size) {
  time_t secs = (time_t)(us / 1000000);
  struct tm tm;
  if (gmtime_r(&secs, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    snprintf(out, size, "%" PRId64 " us", us);
  }
  return out;
}

static void print_task(const hg_task *t) {
  char when[64];
  printf("task %s\n", t->task_id);
  printf("  status:     %s\n", hg_task_status_name(t->status));
  printf("  schedule:   %s%s\n", t->schedule, t->is_recurring ? " (recurring)" : "");
  printf("  name:       %s\n", t->name);
  printf("  blob:       sha256 %s\n", t->blob_sha256);
  if (t->has_created) printf("  created:    %s\n", rfc3339(t->created_us, when, sizeof when));
  if (t->has_next_execution) printf("  next run:   %s\n", rfc3339(t->next_execution_us, when, sizeof when));
  printf("  runs:       %" PRIu32 " completed, last %s\n", t->runs_completed,
         hg_run_status_name(t->last_run_status));
}

static int fail(const char *what, const hg_status *st) {
  fprintf(stderr, "%s failed: %s (%d): %s\n", what, hg_status_code_name(st->code), st->code, st->message);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s HOST PORT CA_PEM CERT_PEM KEY_PEM BINARY [CRON]\n", argv[0]);
    return 2;
  }
  size_t blob_len = 0;
  unsigned char *blob = read_file(argv[6], &blob_len);
  if (blob == NULL) {
    fprintf(stderr, "cannot read %s\n", argv[6]);
    return 2;
  }

  hg_connect_options options;
  memset(&options, 0, sizeof options);
  options.host = argv[1];
  options.port = (uint16_t)strtoul(argv[2], NULL, 10);
  options.ca_file = argv[3];
  options.cert_file = argv[4];
  options.key_file = argv[5];
  options.connect_timeout_ms = 5000;
  options.call_timeout_ms = 5000;

  hg_status st;
  hg_client *client = hg_connect(&options, &st);
  if (client == NULL) {
    free(blob);
    return fail("connect", &st);
  }

  const char *arguments[] = {"--verbose"};
  hg_schedule_request request;
  memset(&request, 0, sizeof request);
  request.blob = blob;
  request.blob_len = blob_len;
  request.kind = HG_SCHEDULE_CRON;
  request.cron = argc > 7 ? argv[7] : "*/5 * * * *";
  request.time_zone = "UTC";
  request.is_recurring = 1;
  request.name = "c-example";
  request.arguments = arguments;
  request.n_arguments = 1;

  int status = 0;
  char *task_id = NULL;
  hg_task *task = NULL;
  if (hg_schedule(client, &request, &task_id, NULL, &st) != HG_OK) {
    status = fail("schedule", &st);
    goto out;
  }
  printf("scheduled %s (%zu bytes)\n", task_id, blob_len);

  if (hg_get(client, task_id, &task, &st) != HG_OK) {
    status = fail("get", &st);
    goto out;
  }
  print_task(task);

  char *token = NULL;
  size_t total = 0;
  do {
    hg_task_list *page = NULL;
    if (hg_list(client, token, 10, &page, &st) != HG_OK) {
      status = fail("list", &st);
      free(token);
      goto out;
    }
    for (size_t i = 0; i < page->count; i++) {
      printf("listed %s %s\n", page->tasks[i].task_id, hg_task_status_name(page->tasks[i].status));
    }
    total += page->count;
    free(token);
    token = page->next_page_token[0] ? strdup(page->next_page_token) : NULL;
    hg_task_list_free(page);
  } while (token != NULL);
  printf("%zu task(s) listed\n", total);

  int cancelled = 0;
  if (hg_delete(client, task_id, 1, &cancelled, &st) != HG_OK) {
    status = fail("delete", &st);
    goto out;
  }
  printf("deleted %s%s\n", task_id, cancelled ? " (a run was cancelled)" : "");

out:
  hg_task_free(task);
  hg_string_free(task_id);
  hg_close(client);
  free(blob);
  return status;
}
