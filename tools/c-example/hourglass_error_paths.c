/*
 * hourglass_error_paths — a check program (not an example): drives the C client's failure paths
 * against hourglass-c-interop-server so that tools/c-client-check.sh can run them under valgrind
 * and AddressSanitizer too. Exit status 0 when every call ends with the expected status.
 *
 *   hourglass_error_paths HOST PORT PKI_DIR
 *
 * PKI_DIR holds the files the interop server writes (ca.pem, user.pem, user-key.pem,
 * server.pem). The deadline case needs the interop server's FakeTaskService, whose Get of the
 * task id "wait-forever" never answers; every other case also holds against the coordinator.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hourglass_client.h"

static int failures = 0;

static void expect(const char *what, int got, int want, const hg_status *st) {
  if (got != want) {
    fprintf(stderr, "FAIL %s: got %s (%d), want %s: %s\n", what, hg_status_code_name(got), got,
            hg_status_code_name(want), st->message);
    failures++;
  } else {
    printf("ok   %s: %s%s%s\n", what, hg_status_code_name(got), st->message[0] ? ": " : "", st->message);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s HOST PORT PKI_DIR\n", argv[0]);
    return 2;
  }
  char ca[4096], cert[4096], key[4096], server[4096];
  snprintf(ca, sizeof ca, "%s/ca.pem", argv[3]);
  snprintf(cert, sizeof cert, "%s/user.pem", argv[3]);
  snprintf(key, sizeof key, "%s/user-key.pem", argv[3]);
  snprintf(server, sizeof server, "%s/server.pem", argv[3]);

  hg_connect_options o;
  memset(&o, 0, sizeof o);
  o.host = argv[1];
  o.port = (uint16_t)strtoul(argv[2], NULL, 10);
  o.ca_file = ca;
  o.cert_file = cert;
  o.key_file = key;
  o.connect_timeout_ms = 5000;
  o.call_timeout_ms = 500;

  hg_status st;
  hg_client *c = hg_connect(&o, &st);
  expect("connect", c ? HG_OK : st.code, HG_OK, &st);
  if (c != NULL) {
    hg_task *t = NULL;
    expect("get past its deadline", hg_get(c, "wait-forever", &t, &st), HG_DEADLINE_EXCEEDED, &st);
    /* A well-formed id (a UUID) that names no task. */
    const char *missing = "00000000-0000-7000-8000-000000000000";
    expect("get of a missing task", hg_get(c, missing, &t, &st), HG_NOT_FOUND, &st);
    expect("delete of a missing task", hg_delete(c, missing, 0, NULL, &st), HG_NOT_FOUND, &st);
    hg_schedule_request r;
    memset(&r, 0, sizeof r);
    static const uint8_t script[] = "#!/bin/sh\nexit 0\n";
    r.blob = script;
    r.blob_len = sizeof script - 1;
    r.kind = HG_SCHEDULE_AT;
    r.at = "not a time";
    char *id = NULL;
    expect("schedule with a bad time", hg_schedule(c, &r, &id, NULL, &st), HG_INVALID_ARGUMENT, &st);
    r.at = "2031-01-01T00:00:00+01:00";
    expect("schedule once", hg_schedule(c, &r, &id, NULL, &st), HG_OK, &st);
    hg_task_list *l = NULL;
    expect("list with a bad token", hg_list(c, "bogus", 0, &l, &st), HG_INVALID_ARGUMENT, &st);
    expect("list", hg_list(c, NULL, 0, &l, &st), HG_OK, &st);
    hg_task_list_free(l);
    if (id != NULL) expect("delete", hg_delete(c, id, 0, NULL, &st), HG_OK, &st);
    hg_string_free(id);
    hg_close(c);
  }

  o.user_id = "bob";
  c = hg_connect(&o, &st);
  expect("connect as alice claiming bob", c ? HG_OK : st.code, HG_OK, &st);
  if (c != NULL) {
    hg_task_list *l = NULL;
    expect("list as bob", hg_list(c, NULL, 0, &l, &st), HG_PERMISSION_DENIED, &st);
    hg_close(c);
  }
  o.user_id = NULL;

  o.ca_file = server; /* not the CA: the server's chain cannot be verified */
  c = hg_connect(&o, &st);
  expect("server not signed by the trusted CA", c ? HG_OK : st.code, HG_UNAVAILABLE, &st);
  hg_close(c);
  o.ca_file = ca;

  o.key_file = ca; /* not a key */
  c = hg_connect(&o, &st);
  expect("unreadable key", c ? HG_OK : st.code, HG_INVALID_ARGUMENT, &st);
  hg_close(c);

  return failures == 0 ? 0 : 1;
}
