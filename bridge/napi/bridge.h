// Shared between the C half (bridge.c) and the Go half (napi.go) of the bridge.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <node_api.h>

// One JS-initiated request: the promise to settle and the optional JS handler
// Go may call while the request runs. Owned by C; freed on the JS thread when
// the request is settled (or when its env is torn down).
typedef struct bridge_op {
  napi_deferred deferred;
  napi_ref handler;  // NULL when the request has no handler
} bridge_op;

// Per-env state: one threadsafe function per napi_env (main thread or worker).
typedef struct bridge_env bridge_env;

// Go → JS thread. Both take ownership of the malloc'd buffers they are given.
// A status other than napi_ok means the env is closing and the message was dropped.
napi_status bridge_post_event(bridge_env* env, bridge_op* op, uint64_t call_id,
                              char* event, char* payload, size_t len);
// keep_handler: the request's handler stays callable after the promise
// settles, until bridge_post_release.
napi_status bridge_post_done(bridge_env* env, bridge_op* op, int ok, int keep_handler,
                             char* code, char* payload, size_t len);
napi_status bridge_post_release(bridge_env* env, bridge_op* op);

// JS thread → Go: settled handler results wait in a C queue and one Go goroutine
// is woken through a pipe, so no Go code runs on the JS thread for them.
enum { BRIDGE_REJECTED = 0, BRIDGE_FULFILLED = 1, BRIDGE_ENV_CLOSED = 2 };
typedef struct bridge_result {
  struct bridge_result* next;
  uint64_t call_id;
  int ok;  // BRIDGE_*: ENV_CLOSED when the env went away before the call ran
  char* code;  // error code when !ok and the JS error had a string `code`, else NULL
  size_t len;
  char* data;  // result bytes, or the error message when !ok
} bridge_result;

int bridge_result_fd(void);              // the wakeup pipe's read end; -1 if it could not be created
bridge_result* bridge_take_results(void);  // detach the whole queue (oldest first)
void bridge_free_result(bridge_result* r);
