// C half of the addon: the N-API surface Node sees. Compiled by cgo into the same
// c-shared library as the Go runtime. Exposes two functions to JS:
//
//   version(): string
//   request(method: string, payload: Uint8Array, handler?: Function): Promise<Buffer>
//
// Everything else (what a method does) is Go's business; see napi.go.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "bridge.h"
#include "_cgo_export.h"

// ---- Signals ---------------------------------------------------------------
//
// Go threads inherit the signal mask of the thread that loads us, and Node's
// handlers are installed without SA_ONSTACK: an async signal delivered to a Go
// thread would run Node's handler on a tiny goroutine stack and crash the
// process (measured: 12 crashes in 12 loaded runs). Block every asynchronous
// signal on the loading thread before the Go runtime's own constructor starts
// it, so Go threads start with them blocked; the loader's own mask is restored
// in module init. Go unblocks what it needs itself (SIGURG, synchronous faults).
static sigset_t loader_mask;
static pthread_t loader_thread;
static int loader_masked;

__attribute__((constructor(101))) static void block_async_signals(void) {
  sigset_t all;
  sigfillset(&all);
  const int synchronous[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
  for (size_t i = 0; i < sizeof synchronous / sizeof *synchronous; i++) sigdelset(&all, synchronous[i]);
  pthread_sigmask(SIG_BLOCK, &all, &loader_mask);
  loader_thread = pthread_self();
  loader_masked = 1;
}

static void restore_loader_mask(void) {
  if (loader_masked && pthread_equal(loader_thread, pthread_self())) {
    pthread_sigmask(SIG_SETMASK, &loader_mask, NULL);
    loader_masked = 0;
  }
}

// Go unblocks SIGCHLD on its threads (it starts VMM children), and libuv
// installs its own SIGCHLD handler without SA_ONSTACK on the first
// child_process.spawn. Register an unref'd libuv SIGCHLD watcher now, so libuv
// installs its handler once, here, and add SA_ONSTACK to it. node_api.h gives
// no libuv declarations; these few are libuv's stable 1.x ABI.
typedef struct uv_loop_s uv_loop_t;
typedef struct uv_handle_s uv_handle_t;
typedef struct uv_signal_s uv_signal_t;
typedef void (*uv_signal_cb)(uv_signal_t*, int);
typedef void (*uv_close_cb)(uv_handle_t*);
enum { UV_SIGNAL_HANDLE_TYPE = 16 };  // UV_SIGNAL in uv_handle_type (UV_UNKNOWN_HANDLE is 0)
size_t uv_handle_size(int type);
int uv_signal_init(uv_loop_t* loop, uv_signal_t* handle);
int uv_signal_start(uv_signal_t* handle, uv_signal_cb cb, int signum);
void uv_unref(uv_handle_t* handle);
void uv_close(uv_handle_t* handle, uv_close_cb cb);

static void ignore_signal(uv_signal_t* h, int signum) { (void)h; (void)signum; }
static void free_handle(uv_handle_t* h) { free(h); }
static void close_signal_handle(void* h) { uv_close((uv_handle_t*)h, free_handle); }

static void make_sigchld_onstack(napi_env env) {
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) == napi_ok) {
    uv_signal_t* h = malloc(uv_handle_size(UV_SIGNAL_HANDLE_TYPE));
    if (h != NULL && uv_signal_init(loop, h) == 0 && uv_signal_start(h, ignore_signal, SIGCHLD) == 0) {
      uv_unref((uv_handle_t*)h);
      // Workers assert that no handles are open at exit.
      napi_add_env_cleanup_hook(env, close_signal_handle, h);
    } else {
      free(h);
    }
  }
  struct sigaction sa;
  if (sigaction(SIGCHLD, NULL, &sa) == 0 && !(sa.sa_flags & SA_ONSTACK)) {
    sa.sa_flags |= SA_ONSTACK;
    sigaction(SIGCHLD, &sa, NULL);
  }
}

// ---- JS thread → Go: handler results ---------------------------------------

static pthread_mutex_t results_mu = PTHREAD_MUTEX_INITIALIZER;
static bridge_result *results_head, *results_tail;
static pthread_once_t results_once = PTHREAD_ONCE_INIT;

// The wakeup is a pipe, not an eventfd: macOS has no eventfd, and a byte
// written only when the queue turns non-empty costs the same either way
// (docs/addon.md). Both ends are non-blocking: the JS thread must never
// block on a full pipe (a full pipe already holds a wakeup), and Go's
// netpoller serves the read end.
static int results_pipe[2] = {-1, -1};

static int set_flags(int fd) {
  return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0;
}

static void open_results_pipe(void) {
  int p[2];
  if (pipe(p) != 0) return;
  if (!set_flags(p[0]) || !set_flags(p[1])) {
    close(p[0]);
    close(p[1]);
    return;
  }
  results_pipe[0] = p[0];
  results_pipe[1] = p[1];
}

int bridge_result_fd(void) {
  pthread_once(&results_once, open_results_pipe);
  return results_pipe[0];
}

bridge_result* bridge_take_results(void) {
  pthread_mutex_lock(&results_mu);
  bridge_result* head = results_head;
  results_head = results_tail = NULL;
  pthread_mutex_unlock(&results_mu);
  return head;
}

void bridge_free_result(bridge_result* r) {
  free(r->code);
  free(r);
}

static void push_result(uint64_t call_id, int ok, const char* code, const char* data, size_t len) {
  bridge_result* r = malloc(sizeof *r + len);
  if (r == NULL) return;  // the Go caller times out rather than the JS thread aborting
  *r = (bridge_result){NULL, call_id, ok, code ? strdup(code) : NULL, len, (char*)(r + 1)};
  if (len) memcpy(r->data, data, len);
  pthread_mutex_lock(&results_mu);
  int was_empty = results_head == NULL;
  if (results_tail) results_tail->next = r; else results_head = r;
  results_tail = r;
  pthread_mutex_unlock(&results_mu);
  if (was_empty) {
    // EAGAIN means the pipe is full of wakeups Go has yet to read: enough.
    char one = 1;
    (void)!write(results_pipe[1], &one, 1);
  }
}

// Copies a string property of obj into buf (truncated); returns 0 when absent.
static size_t string_property(napi_env env, napi_value obj, const char* name, char* buf, size_t cap) {
  napi_value v;
  napi_valuetype t;
  size_t n = 0;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok ||
      t != napi_string)
    return 0;
  napi_get_value_string_utf8(env, v, buf, cap, &n);
  return n;
}

// Converts what a JS handler returned (or threw) into bytes for Go: typed
// arrays as their bytes, undefined/null as nothing, anything else as String(v);
// errors as their message and string `code`.
static void push_value(napi_env env, uint64_t call_id, int ok, napi_value v) {
  napi_valuetype t = napi_undefined;
  napi_typeof(env, v, &t);
  if (ok && (t == napi_undefined || t == napi_null)) {
    push_result(call_id, 1, NULL, NULL, 0);
    return;
  }
  bool is_typed = false;
  napi_is_typedarray(env, v, &is_typed);
  if (ok && is_typed) {
    void* data;
    size_t length, offset;
    napi_typedarray_type tt;
    napi_value ab;
    napi_get_typedarray_info(env, v, &tt, &length, &data, &ab, &offset);
    size_t elem = tt == napi_uint8_array || tt == napi_int8_array || tt == napi_uint8_clamped_array ? 1 : 0;
    if (elem) {
      push_result(call_id, 1, NULL, data, length);
      return;
    }
  }
  char code[128] = {0};
  napi_value text = v;
  if (!ok && t == napi_object) {
    string_property(env, v, "code", code, sizeof code);
    napi_value msg;
    napi_valuetype mt;
    if (napi_get_named_property(env, v, "message", &msg) == napi_ok && napi_typeof(env, msg, &mt) == napi_ok &&
        mt == napi_string)
      text = msg;
  }
  napi_value s;
  if (napi_coerce_to_string(env, text, &s) != napi_ok) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    push_result(call_id, 0, NULL, "handler returned a value that cannot be converted", 49);
    return;
  }
  size_t len = 0;
  napi_get_value_string_utf8(env, s, NULL, 0, &len);
  char* buf = malloc(len + 1);
  if (buf == NULL) return;
  napi_get_value_string_utf8(env, s, buf, len + 1, &len);
  push_result(call_id, ok, code[0] ? code : NULL, buf, len);
  free(buf);
}

static napi_value on_fulfilled(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value v;
  void* data;
  napi_get_cb_info(env, info, &argc, &v, NULL, &data);
  if (argc < 1) napi_get_undefined(env, &v);
  push_value(env, (uint64_t)(uintptr_t)data, 1, v);
  return NULL;
}

static napi_value on_rejected(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value v;
  void* data;
  napi_get_cb_info(env, info, &argc, &v, NULL, &data);
  if (argc < 1) napi_get_undefined(env, &v);
  push_value(env, (uint64_t)(uintptr_t)data, 0, v);
  return NULL;
}

// ---- Go → JS thread --------------------------------------------------------

struct bridge_env {
  napi_threadsafe_function tsfn;
  uint64_t go_id;
  int64_t pending;  // requests not yet settled; JS thread only
};

enum { MSG_EVENT = 1, MSG_DONE = 2, MSG_RELEASE = 3 };

typedef struct {
  int kind;
  bridge_op* op;
  uint64_t call_id;  // MSG_EVENT
  int ok;            // MSG_DONE
  int keep_handler;  // MSG_DONE: Go still calls the handler; a MSG_RELEASE follows
  char* name;        // MSG_EVENT: event name; MSG_DONE: error code or NULL
  char* payload;
  size_t len;
} message;

static void free_message(message* m) {
  free(m->name);
  free(m->payload);
  free(m);
}

static void run_event(napi_env env, message* m) {
  napi_value handler, undefined, argv[2], ret;
  void* copy;
  if (m->op->handler == NULL || napi_get_reference_value(env, m->op->handler, &handler) != napi_ok) {
    push_result(m->call_id, 0, NULL, "request has no handler", 22);
    return;
  }
  napi_get_undefined(env, &undefined);
  napi_create_string_utf8(env, m->name, NAPI_AUTO_LENGTH, &argv[0]);
  napi_create_buffer_copy(env, m->len, m->payload ? m->payload : "", &copy, &argv[1]);
  if (napi_call_function(env, undefined, handler, 2, argv, &ret) != napi_ok) {
    bool pending = false;
    napi_value exc;
    napi_is_exception_pending(env, &pending);
    if (pending && napi_get_and_clear_last_exception(env, &exc) == napi_ok) push_value(env, m->call_id, 0, exc);
    else push_result(m->call_id, 0, NULL, "handler call failed", 19);
    return;
  }
  bool is_promise = false;
  napi_is_promise(env, ret, &is_promise);
  if (!is_promise) {
    push_value(env, m->call_id, 1, ret);
    return;
  }
  napi_value then, cbs[2];
  void* id = (void*)(uintptr_t)m->call_id;
  napi_get_named_property(env, ret, "then", &then);
  napi_create_function(env, "onFulfilled", NAPI_AUTO_LENGTH, on_fulfilled, id, &cbs[0]);
  napi_create_function(env, "onRejected", NAPI_AUTO_LENGTH, on_rejected, id, &cbs[1]);
  if (napi_call_function(env, ret, then, 2, cbs, NULL) != napi_ok) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    push_result(m->call_id, 0, NULL, "handler promise cannot be awaited", 33);
  }
}

static void release_op(napi_env env, bridge_op* op) {
  if (op->handler) napi_delete_reference(env, op->handler);
  free(op);
}

static void run_done(napi_env env, bridge_env* st, message* m) {
  napi_value value;
  if (m->ok) {
    void* copy;
    napi_create_buffer_copy(env, m->len, m->payload ? m->payload : "", &copy, &value);
    napi_resolve_deferred(env, m->op->deferred, value);
  } else {
    napi_value msg, code = NULL;
    napi_create_string_utf8(env, m->payload ? m->payload : "", m->len, &msg);
    if (m->name) napi_create_string_utf8(env, m->name, NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, msg, &value);
    napi_reject_deferred(env, m->op->deferred, value);
  }
  if (--st->pending == 0) napi_unref_threadsafe_function(env, st->tsfn);
  if (!m->keep_handler) release_op(env, m->op);
}

// Runs on the JS thread for every posted message, and with env == NULL for
// messages still queued when the env is torn down.
static void call_js(napi_env env, napi_value js_cb, void* context, void* data) {
  (void)js_cb;
  bridge_env* st = context;
  message* m = data;
  if (env == NULL) {
    if (m->kind == MSG_EVENT) push_result(m->call_id, BRIDGE_ENV_CLOSED, NULL, NULL, 0);
    free_message(m);
    return;
  }
  switch (m->kind) {
    case MSG_EVENT: run_event(env, m); break;
    case MSG_DONE: run_done(env, st, m); break;
    case MSG_RELEASE: release_op(env, m->op); break;
  }
  free_message(m);
}

static napi_status post(bridge_env* st, message* m) {
  napi_status s = napi_call_threadsafe_function(st->tsfn, m, napi_tsfn_nonblocking);
  if (s != napi_ok) free_message(m);
  return s;
}

napi_status bridge_post_event(bridge_env* st, bridge_op* op, uint64_t call_id, char* event, char* payload,
                              size_t len) {
  message* m = malloc(sizeof *m);
  if (m == NULL) {
    free(event);
    free(payload);
    return napi_generic_failure;
  }
  *m = (message){MSG_EVENT, op, call_id, 0, 0, event, payload, len};
  return post(st, m);
}

napi_status bridge_post_done(bridge_env* st, bridge_op* op, int ok, int keep_handler, char* code, char* payload,
                             size_t len) {
  message* m = malloc(sizeof *m);
  if (m == NULL) {
    free(code);
    free(payload);
    return napi_generic_failure;
  }
  *m = (message){MSG_DONE, op, 0, ok, keep_handler, code, payload, len};
  return post(st, m);
}

napi_status bridge_post_release(bridge_env* st, bridge_op* op) {
  message* m = calloc(1, sizeof *m);
  if (m == NULL) return napi_generic_failure;
  m->kind = MSG_RELEASE;
  m->op = op;
  return post(st, m);
}

// Called on the JS thread when the env goes away (process or worker exit).
static void finalize_env(napi_env env, void* finalize_data, void* context) {
  (void)env;
  (void)finalize_data;
  bridge_env* st = context;
  goEnvTeardown(st->go_id);  // returns once no Go goroutine can post to st
  free(st);
}

// ---- JS-visible functions --------------------------------------------------

static napi_value js_request(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  bridge_env* st;
  napi_get_cb_info(env, info, &argc, argv, NULL, (void**)&st);

  napi_valuetype t;
  char method[64];
  size_t method_len = 0;
  if (argc < 2 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_string ||
      napi_get_value_string_utf8(env, argv[0], method, sizeof method, &method_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "request(method: string, payload: Uint8Array, handler?: Function)");
    return NULL;
  }
  bool is_typed = false;
  void* payload = NULL;
  size_t payload_len = 0;
  napi_typedarray_type tt;
  napi_value ab;
  size_t offset;
  napi_is_typedarray(env, argv[1], &is_typed);
  if (!is_typed || napi_get_typedarray_info(env, argv[1], &tt, &payload_len, &payload, &ab, &offset) != napi_ok ||
      tt != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "request: payload must be a Uint8Array");
    return NULL;
  }
  bool has_handler = argc > 2 && napi_typeof(env, argv[2], &t) == napi_ok && t == napi_function;
  if (argc > 2 && !has_handler && t != napi_undefined) {
    napi_throw_type_error(env, NULL, "request: handler must be a function");
    return NULL;
  }

  bridge_op* op = calloc(1, sizeof *op);
  if (op == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_value promise;
  napi_create_promise(env, &op->deferred, &promise);
  if (has_handler) napi_create_reference(env, argv[2], 1, &op->handler);
  // Keep the event loop alive only while a request is unsettled, so an idle
  // process exits by itself.
  if (st->pending++ == 0) napi_ref_threadsafe_function(env, st->tsfn);
  goRequest(st->go_id, op, method, (int)method_len, payload, (int)payload_len);
  return promise;
}

static napi_value js_version(napi_env env, napi_callback_info info) {
  (void)info;
  char* s = goVersion();
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  free(s);
  return v;
}

NAPI_MODULE_INIT() {
  restore_loader_mask();
  make_sigchld_onstack(env);
  bridge_env* st = calloc(1, sizeof *st);
  if (st == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_value name;
  napi_create_string_utf8(env, "torkbot-sandbox", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, finalize_env, st, call_js, &st->tsfn) !=
      napi_ok) {
    free(st);
    napi_throw_error(env, NULL, "cannot create the addon's threadsafe function");
    return NULL;
  }
  napi_unref_threadsafe_function(env, st->tsfn);
  st->go_id = goEnvInit(st);
  napi_property_descriptor props[] = {
      {"request", NULL, js_request, NULL, NULL, NULL, napi_enumerable, st},
      {"version", NULL, js_version, NULL, NULL, NULL, napi_enumerable, st},
  };
  napi_define_properties(env, exports, sizeof props / sizeof *props, props);
  return exports;
}
