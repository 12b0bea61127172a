/* The CLI side of the REST API (see client.h). */
#include "cli/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"

struct buf {
	char *data;
	size_t len;
};

int client_init(struct client *c, const char *opt)
{
	const char *s = opt ? opt : getenv("CLOISON_SOCKET");

	if (!s || !*s)
		s = CLIENT_DEFAULT_SOCKET;
	if (strlen(s) >= sizeof(c->socket))
		return cli_error(CLI_EXIT_USAGE, "socket path '%s' is too long", s);
	snprintf(c->socket, sizeof(c->socket), "%s", s);
	return CLI_EXIT_OK;
}

void client_escape(const char *in, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *in && n + 4 < len; in++) {
		unsigned char ch = (unsigned char)*in;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			out[n++] = (char)ch;
		} else {
			out[n++] = '%';
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		}
	}
	out[n] = 0;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *opaque)
{
	struct buf *b = opaque;
	size_t n = size * nmemb;
	char *nd = realloc(b->data, b->len + n + 1);

	if (!nd)
		return 0;
	memcpy(nd + b->len, ptr, n);
	b->data = nd;
	b->len += n;
	b->data[b->len] = 0;
	return n;
}

static int exit_for_http(long status)
{
	switch (status) {
	case 400:
	case 405:
	case 413:
	case 414:
		return CLI_EXIT_USAGE;
	case 403:
		return CLI_EXIT_DENIED;
	case 404:
		return CLI_EXIT_NOT_FOUND;
	case 409:
		return CLI_EXIT_CONFLICT;
	default:
		return CLI_EXIT_ERROR;
	}
}

static int unreachable(const struct client *c, const char *why)
{
	return cli_error(CLI_EXIT_UNAVAILABLE,
			 "cannot reach cloisond at %s: %s (is it running? use --socket PATH or "
			 "CLOISON_SOCKET)",
			 c->socket, why);
}

static CURL *new_handle(struct client *c, const char *method, const char *path, char *url,
			size_t urllen)
{
	CURL *h = curl_easy_init();

	if (!h)
		return NULL;
	snprintf(url, urllen, "http://localhost%s", path);
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	return h;
}

int client_call(struct client *c, const char *method, const char *path, json_t *body,
		json_t **resp)
{
	struct buf out = { 0 };
	struct curl_slist *hdrs = NULL;
	char url[2048], *text = NULL;
	long status = 0;
	int ret;

	*resp = NULL;
	CURL *h = new_handle(c, method, path, url, sizeof(url));
	if (!h)
		return cli_error(CLI_EXIT_ERROR, "cannot initialize libcurl");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, text ? text : "{}");
	}
	CURLcode cr = curl_easy_perform(h);
	if (cr != CURLE_OK) {
		ret = unreachable(c, curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	json_error_t jerr;
	json_t *j = out.len ? json_loadb(out.data, out.len, 0, &jerr) : NULL;
	if (status >= 200 && status < 300) {
		*resp = j ? j : json_object();
		ret = CLI_EXIT_OK;
		goto out;
	}
	const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	ret = cli_error(exit_for_http(status), "%s", msg ? msg : "the daemon answered HTTP error");
	if (!msg)
		fprintf(stderr, "  (HTTP %ld: %.200s)\n", status, out.data ? out.data : "");
	json_decref(j);
out:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	free(text);
	free(out.data);
	return ret;
}

struct follow {
	struct buf line;
	char type[64];
	struct buf data;
	bool (*on_event)(const char *type, json_t *data, void *opaque);
	void *opaque;
	bool stop;
	long status;
	struct buf err;
	CURL *h;
};

static void dispatch_event(struct follow *f)
{
	if (f->data.len) {
		json_t *j = json_loads(f->data.data, 0, NULL);
		if (j && !f->on_event(f->type[0] ? f->type : "message", j, f->opaque))
			f->stop = true;
		json_decref(j);
	}
	f->type[0] = 0;
	f->data.len = 0;
	if (f->data.data)
		f->data.data[0] = 0;
}

static void sse_line(struct follow *f, const char *line)
{
	if (!*line) {
		dispatch_event(f);
	} else if (!strncmp(line, "event:", 6)) {
		snprintf(f->type, sizeof(f->type), "%s", line + 6 + (line[6] == ' '));
	} else if (!strncmp(line, "data:", 5)) {
		const char *v = line + 5 + (line[5] == ' ');
		on_data((char *)v, 1, strlen(v), &f->data);
	}
}

static size_t on_sse(char *ptr, size_t size, size_t nmemb, void *opaque)
{
	struct follow *f = opaque;
	size_t n = size * nmemb;

	if (!f->status)
		curl_easy_getinfo(f->h, CURLINFO_RESPONSE_CODE, &f->status);
	if (f->status != 200)
		return on_data(ptr, size, nmemb, &f->err);
	for (size_t i = 0; i < n && !f->stop; i++) {
		if (ptr[i] == '\n') {
			sse_line(f, f->line.data ? f->line.data : "");
			f->line.len = 0;
			if (f->line.data)
				f->line.data[0] = 0;
		} else if (ptr[i] != '\r') {
			on_data(&ptr[i], 1, 1, &f->line);
		}
	}
	return f->stop ? 0 : n;
}

int client_follow(struct client *c, const char *path,
		  bool (*on_event)(const char *type, json_t *data, void *opaque), void *opaque)
{
	struct follow f = { .on_event = on_event, .opaque = opaque };
	char url[2048];
	int ret = CLI_EXIT_OK;

	CURL *h = new_handle(c, "GET", path, url, sizeof(url));
	if (!h)
		return cli_error(CLI_EXIT_ERROR, "cannot initialize libcurl");
	f.h = h;
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_sse);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &f);
	CURLcode cr = curl_easy_perform(h);
	if (!f.status)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &f.status);
	if (f.stop) {
		ret = CLI_EXIT_OK;
	} else if (cr != CURLE_OK && !f.status) {
		ret = unreachable(c, curl_easy_strerror(cr));
	} else if (f.status != 200) {
		json_t *j = f.err.len ? json_loadb(f.err.data, f.err.len, 0, NULL) : NULL;
		const char *msg =
			json_string_value(json_object_get(json_object_get(j, "error"), "message"));
		ret = cli_error(exit_for_http(f.status), "%s", msg ? msg : "the daemon refused");
		json_decref(j);
	} else {
		ret = cli_error(CLI_EXIT_UNAVAILABLE,
				"the daemon closed the event stream (it stopped or restarted)");
	}
	curl_easy_cleanup(h);
	free(f.line.data);
	free(f.data.data);
	free(f.err.data);
	return ret;
}

int client_upgrade(struct client *c, const char *path, const char *proto)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char req[2048], resp[8192];
	size_t n = 0;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->socket);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return -unreachable(c, strerror(e));
	}
	int len = snprintf(req, sizeof(req),
			   "POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
			   "Upgrade: %s\r\nContent-Length: 0\r\n\r\n",
			   path, proto);
	if (write_full(fd, req, (size_t)len)) {
		close(fd);
		return -unreachable(c, strerror(errno));
	}
	/* Read the response head byte by byte: what follows it is the stream. */
	while (n + 1 < sizeof(resp)) {
		ssize_t r = read(fd, resp + n, 1);
		if (r <= 0)
			break;
		n++;
		if (n >= 4 && !memcmp(resp + n - 4, "\r\n\r\n", 4))
			break;
	}
	resp[n] = 0;
	int status = 0;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
		close(fd);
		return -unreachable(c, "no HTTP response");
	}
	if (status == 101)
		return fd;
	/* An error: the JSON body follows the head. */
	char body[4096];
	ssize_t bn = read(fd, body, sizeof(body) - 1);
	close(fd);
	body[bn > 0 ? bn : 0] = 0;
	char *brace = strchr(body, '{');
	json_t *j = brace ? json_loads(brace, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
	const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	int ret = cli_error(exit_for_http(status), "%s", msg ? msg : "the daemon refused");
	json_decref(j);
	return -ret;
}
