/* libnftables wrapper (see nft.h). */
#include "net/nft.h"

#include <errno.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int nft_open(struct nft *n)
{
	n->err[0] = '\0';
	n->ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!n->ctx)
		return -ENOMEM;
	if (nft_ctx_buffer_output(n->ctx) || nft_ctx_buffer_error(n->ctx)) {
		nft_ctx_free(n->ctx);
		n->ctx = NULL;
		return -ENOMEM;
	}
	return 0;
}

void nft_close(struct nft *n)
{
	if (n->ctx)
		nft_ctx_free(n->ctx);
	n->ctx = NULL;
}

static int run_buf(struct nft *n, const char *cmd)
{
	const char *e;
	size_t len;

	n->err[0] = '\0';
	if (nft_run_cmd_from_buffer(n->ctx, cmd) == 0) {
		nft_ctx_get_error_buffer(n->ctx); /* drain warnings */
		return 0;
	}
	e = nft_ctx_get_error_buffer(n->ctx);
	snprintf(n->err, sizeof(n->err), "%s", e && *e ? e : "nft command failed");
	len = strlen(n->err);
	while (len && n->err[len - 1] == '\n')
		n->err[--len] = '\0';
	return -EINVAL;
}

static char *vformat(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static char *vformat(const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0)
		return NULL;
	return s;
}

int nft_run(struct nft *n, const char *fmt, ...)
{
	va_list ap;
	char *cmd;
	int ret;

	va_start(ap, fmt);
	cmd = vformat(fmt, ap);
	va_end(ap);
	if (!cmd)
		return -ENOMEM;
	ret = run_buf(n, cmd);
	nft_ctx_get_output_buffer(n->ctx);
	free(cmd);
	return ret;
}

int nft_list(struct nft *n, bool json, char **out, const char *fmt, ...)
{
	unsigned flags = nft_ctx_output_get_flags(n->ctx);
	const char *o;
	va_list ap;
	char *cmd;
	int ret;

	*out = NULL;
	va_start(ap, fmt);
	cmd = vformat(fmt, ap);
	va_end(ap);
	if (!cmd)
		return -ENOMEM;
	nft_ctx_output_set_flags(n->ctx, json ? flags | NFT_CTX_OUTPUT_JSON : flags & ~NFT_CTX_OUTPUT_JSON);
	ret = run_buf(n, cmd);
	nft_ctx_output_set_flags(n->ctx, flags);
	free(cmd);
	o = nft_ctx_get_output_buffer(n->ctx);
	if (ret)
		return ret;
	*out = strdup(o ? o : "");
	return *out ? 0 : -ENOMEM;
}

bool nft_table_exists(struct nft *n, const char *family, const char *name)
{
	char *out;
	bool ok = nft_list(n, false, &out, "list table %s %s", family, name) == 0;

	free(out);
	n->err[0] = '\0';
	return ok;
}

int nft_table_delete(struct nft *n, const char *family, const char *name)
{
	if (!nft_table_exists(n, family, name))
		return 0;
	return nft_run(n, "delete table %s %s", family, name);
}
