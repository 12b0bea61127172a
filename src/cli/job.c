/* cloison job list|show|wait|cancel, and the follower of a job that the
 * verbs starting one share (job.h). Progress comes from polling
 * GET /v1/jobs/{id}: a job changes slowly, and a poll survives a restart
 * of cloisond (the job is then shown failed, with the reason). */
#include "cli/job.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"

#define POLL_MS 200
#define BAR_WIDTH 30

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static long long num(json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

static void print_json(json_t *j, bool compact)
{
	char *s = json_dumps(j, (compact ? JSON_COMPACT : JSON_INDENT(2)) | JSON_SORT_KEYS);
	if (s) {
		puts(s);
		free(s);
	}
	fflush(stdout);
}

static void job_path(char *out, size_t len, const char *id)
{
	char esc[128];

	client_escape(id, esc, sizeof(esc));
	snprintf(out, len, "/v1/jobs/%s", esc);
}

/* The exit status a failed job's error code stands for (cli.h). */
static int exit_for_code(const char *code)
{
	if (!strcmp(code, "invalid-state"))
		return CLI_EXIT_CONFLICT;
	if (!strcmp(code, "not-found"))
		return CLI_EXIT_NOT_FOUND;
	if (!strcmp(code, "forbidden"))
		return CLI_EXIT_DENIED;
	if (!strcmp(code, "bad-request"))
		return CLI_EXIT_USAGE;
	return CLI_EXIT_ERROR;
}

static void draw_bar(json_t *job)
{
	char done[32], total[32], bar[BAR_WIDTH + 1];
	long long pct = num(job, "percent");
	int fill = (int)(pct * BAR_WIDTH / 100);

	for (int i = 0; i < BAR_WIDTH; i++)
		bar[i] = i < fill ? '#' : ' ';
	bar[BAR_WIDTH] = 0;
	fprintf(stderr, "\r%s %s [%s] %3lld%%", str(job, "kind"), str(job, "vm"), bar, pct);
	if (num(job, "bytes_total") > 0) {
		format_size((uint64_t)num(job, "bytes_done"), done, sizeof(done));
		format_size((uint64_t)num(job, "bytes_total"), total, sizeof(total));
		fprintf(stderr, "  %s of %s", done, total);
	}
	fprintf(stderr, "\033[K");
	fflush(stderr);
}

int cli_job_follow(struct client *c, const char *id, bool json_events, json_t **final)
{
	char path[256];
	bool bar = isatty(2), drawn = false;
	long long last_pct = -1, last_bytes = -1;
	json_t *job = NULL;
	int r;

	if (final)
		*final = NULL;
	job_path(path, sizeof(path), id);
	for (;;) {
		json_decref(job);
		if ((r = client_call(c, "GET", path, NULL, &job)))
			return r;
		bool running = !strcmp(str(job, "state"), "running");
		if (json_events && (num(job, "percent") != last_pct ||
				    num(job, "bytes_done") != last_bytes || !running)) {
			json_t *ev = json_deep_copy(job);
			json_object_set_new(ev, "event", json_string(running ? "progress" : "end"));
			print_json(ev, true);
			json_decref(ev);
		}
		last_pct = num(job, "percent");
		last_bytes = num(job, "bytes_done");
		if (bar && !json_events) {
			draw_bar(job);
			drawn = true;
		}
		if (!running)
			break;
		struct timespec ts = { 0, POLL_MS * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (drawn)
		fputc('\n', stderr);
	const char *state = str(job, "state");
	r = CLI_EXIT_OK;
	if (strcmp(state, "completed")) {
		json_t *e = json_object_get(job, "error");
		r = cli_error(exit_for_code(str(e, "code")), "%s", *str(e, "message")
									? str(e, "message")
									: "the job failed");
	}
	if (final)
		*final = job;
	else
		json_decref(job);
	return r;
}

int cli_job_start(struct client *c, const char *method, const char *path, json_t *body,
		  json_t **job)
{
	json_t *b = body ? json_deep_copy(body) : json_object(), *resp;

	json_object_set_new(b, "wait", json_false());
	int r = client_call(c, method, path, b, &resp);
	json_decref(b);
	if (r)
		return r;
	if (job)
		*job = resp;
	else
		json_decref(resp);
	return CLI_EXIT_OK;
}

/* ---- the noun ---- */

enum { OPT_SOCKET = 1000, OPT_JSON, OPT_HELP, OPT_VM };

struct job_args {
	const char *socket;
	const char *vm;
	bool json, help;
};

static const char usage_text[] =
	"usage: cloison job <verb> [<args>]\n\n"
	"Jobs are cloisond's long operations (save, checkpoints): each has an id, a\n"
	"state (running, completed, failed, cancelled), its progress and its error.\n\n"
	"Verbs:\n"
	"  list [--vm NAME]   the jobs you may see, newest first\n"
	"  show ID            one job\n"
	"  wait ID            follow a job to its end (progress bar on a terminal;\n"
	"                     with --json one JSON line per change of progress)\n"
	"  cancel ID          cancel a job that can be cancelled (a merge)\n\n"
	"Every verb takes --json, --socket PATH and --help. Exit status of wait: 0 if\n"
	"the job completed, else what its error means (1 failed, 4 refused in the VM's\n"
	"state, ...), as for the verb that started it.\n";

static int parse(int argc, char **argv, struct job_args *a)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "vm", required_argument, NULL, OPT_VM },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	optind = 1;
	opterr = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case OPT_SOCKET: a->socket = optarg; break;
		case OPT_JSON: a->json = true; break;
		case OPT_HELP: a->help = true; break;
		case OPT_VM: a->vm = optarg; break;
		default:
			return cli_error(CLI_EXIT_USAGE, "unknown option or missing argument "
					 "(see 'cloison job --help')");
		}
	}
	return 0;
}

static void print_human(json_t *job)
{
	char done[32], total[32];
	json_t *e = json_object_get(job, "error");

	printf("Id:        %s\n", str(job, "id"));
	printf("Kind:      %s\n", str(job, "kind"));
	printf("VM:        %s\n", str(job, "vm"));
	printf("State:     %s\n", str(job, "state"));
	printf("Progress:  %lld%%", num(job, "percent"));
	if (num(job, "bytes_total") > 0) {
		format_size((uint64_t)num(job, "bytes_done"), done, sizeof(done));
		format_size((uint64_t)num(job, "bytes_total"), total, sizeof(total));
		printf(" (%s of %s)", done, total);
	}
	printf("\nCancel:    %s\n", json_is_true(json_object_get(job, "cancellable")) ? "possible"
										 : "not possible");
	printf("Created:   %s\n", str(job, "created"));
	if (*str(job, "finished"))
		printf("Finished:  %s\n", str(job, "finished"));
	if (json_is_object(e))
		printf("Error:     %s (%s)\n", str(e, "message"), str(e, "code"));
	if (*str(job, "note"))
		printf("Note:      %s\n", str(job, "note"));
}

static int verb_list(struct client *c, struct job_args *a)
{
	char path[300] = "/v1/jobs", esc[256];
	json_t *resp, *job;
	size_t i;
	int r;

	if (a->vm) {
		client_escape(a->vm, esc, sizeof(esc));
		snprintf(path, sizeof(path), "/v1/jobs?vm=%s", esc);
	}
	if ((r = client_call(c, "GET", path, NULL, &resp)))
		return r;
	if (a->json) {
		print_json(resp, false);
	} else {
		printf("%-36s  %-18s  %-16s  %-9s  %4s  %s\n", "ID", "KIND", "VM", "STATE", "%",
		       "CREATED");
		json_array_foreach(resp, i, job)
			printf("%-36s  %-18s  %-16s  %-9s  %4lld  %s\n", str(job, "id"),
			       str(job, "kind"), str(job, "vm"), str(job, "state"),
			       num(job, "percent"), str(job, "created"));
		if (!json_array_size(resp))
			printf("(no jobs)\n");
	}
	json_decref(resp);
	return CLI_EXIT_OK;
}

int cli_job(int argc, char **argv)
{
	struct job_args a = { 0 };
	struct client c;
	char path[256];
	json_t *resp;
	int r;

	if (argc < 2) {
		fputs(usage_text, stderr);
		return cli_error(CLI_EXIT_USAGE, "expected a verb after 'cloison job'");
	}
	const char *verb = argv[1];
	if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
		fputs(usage_text, stdout);
		return CLI_EXIT_OK;
	}
	bool list = !strcmp(verb, "list");
	if (!list && strcmp(verb, "show") && strcmp(verb, "wait") && strcmp(verb, "cancel")) {
		fputs(usage_text, stderr);
		return cli_error(CLI_EXIT_USAGE, "unknown verb 'job %s'", verb);
	}
	if ((r = parse(argc - 1, argv + 1, &a)))
		return r;
	if (a.help) {
		fputs(usage_text, stdout);
		return CLI_EXIT_OK;
	}
	int names = argc - 1 - optind;
	if (list ? names != 0 : names != 1)
		return cli_error(CLI_EXIT_USAGE, list ? "'job list' takes no id (--vm NAME filters)"
						      : "expected exactly one job id");
	if (!list && a.vm)
		return cli_error(CLI_EXIT_USAGE, "--vm is for 'job list'");
	if ((r = client_init(&c, a.socket)))
		return r;
	if (list)
		return verb_list(&c, &a);
	const char *id = argv[1 + optind];
	if (!strcmp(verb, "wait")) {
		r = cli_job_follow(&c, id, a.json, &resp);
		if (!a.json && r == CLI_EXIT_OK)
			printf("Job %s (%s of VM '%s') completed.\n", str(resp, "id"),
			       str(resp, "kind"), str(resp, "vm"));
		json_decref(resp);
		return r;
	}
	job_path(path, sizeof(path), id);
	if ((r = client_call(&c, !strcmp(verb, "cancel") ? "DELETE" : "GET", path, NULL, &resp)))
		return r;
	if (a.json)
		print_json(resp, false);
	else if (!strcmp(verb, "cancel"))
		printf("Asked job %s (%s of VM '%s') to cancel; follow it with 'cloison job wait "
		       "%s'.\n", str(resp, "id"), str(resp, "kind"), str(resp, "vm"),
		       str(resp, "id"));
	else
		print_human(resp);
	json_decref(resp);
	return CLI_EXIT_OK;
}
