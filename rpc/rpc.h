/*
 * rpc.h - the node's HTTP JSON-RPC 2.0 server (nng's HTTP server + jansson).
 *
 *   POST /        JSON-RPC 2.0, single requests and batches, params by name or position
 *   GET  /health  200 while the node is up
 *
 * Methods and their encodings are documented in docs/rpc.md. Prefix: rpc_.
 */
#ifndef PBFT_RPC_RPC_H
#define PBFT_RPC_RPC_H

#include <stddef.h>

struct node;
typedef struct rpc_server rpc_server;

/* rpc_open starts serving at url ("http://host:port"). Returns 0 or -1 with err. */
int rpc_open(struct node *n, const char *url, rpc_server **out, char *err, size_t errlen);
/* rpc_close stops the server and waits for handlers in progress. Safe on NULL. */
void rpc_close(rpc_server *s);

/* rpc_handle runs one POST body through the JSON-RPC dispatcher (the HTTP handler calls it;
 * tests call it directly). Returns a malloc'd response body (NULL: no body, for a
 * notification-only batch) and sets *http_status. */
char *rpc_handle(struct node *n, const char *body, size_t len, int *http_status);

#endif
