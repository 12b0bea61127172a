/* cloison checkpoint create|list|apply|rename|remove|settings. Create,
 * apply and remove are cloisond jobs: followed with a progress bar on a
 * terminal, or returned at once with --no-wait (the job's id). */
#include "cli/checkpoint.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/job.h"

enum {
	OPT_SOCKET = 1000, OPT_JSON, OPT_HELP, OPT_NAME, OPT_TREE, OPT_NO_WAIT, OPT_FIRST,
	OPT_TYPE, OPT_FOLDER, OPT_DEFAULT_FOLDER,
};

struct cp_args {
	const char *socket, *name, *type, *folder;
	bool json, help, tree, no_wait, first, default_folder;
	int pos; /* index of the first positional argument */
};

static const char usage_text[] =
	"usage: cloison checkpoint <verb> [<args>]\n\n"
	"A checkpoint keeps a VM's disks (the running disk becomes a read-only parent and\n"
	"the VM goes on in a new differencing disk, <disk>_<GUID>.avhdx), a copy of its\n"
	"configuration and, for a standard checkpoint, its memory and devices.\n\n"
	"Verbs:\n"
	"  create VM [--name CP]        take a checkpoint (also 'cloison vm checkpoint VM')\n"
	"  list VM [--tree]             the checkpoints; --tree shows the tree and 'Now'\n"
	"  apply VM CP [--checkpoint-first]   go back to CP (the current state is lost\n"
	"                               unless --checkpoint-first takes a checkpoint of it)\n"
	"  rename VM CP NEW             rename a checkpoint\n"
	"  remove VM CP [--subtree]     remove CP (--subtree: and everything below it); its\n"
	"                               differencing disk is merged, no data is lost\n"
	"                               (live, while the VM runs: it goes on running)\n"
	"  settings VM [--type production|production-only|standard|disabled]\n"
	"              [--folder DIR | --default-folder]\n\n"
	"CP is a checkpoint's name or id. create, apply and remove take --no-wait (print\n"
	"the job's id; follow it with 'cloison job wait ID'). Every verb takes --json,\n"
	"--socket PATH and --help.\n";

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (s) {
		puts(s);
		free(s);
	}
}

static int parse(int argc, char **argv, struct cp_args *a)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "tree", no_argument, NULL, OPT_TREE },
		{ "subtree", no_argument, NULL, OPT_TREE },
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		{ "checkpoint-first", no_argument, NULL, OPT_FIRST },
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "folder", required_argument, NULL, OPT_FOLDER },
		{ "default-folder", no_argument, NULL, OPT_DEFAULT_FOLDER },
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
		case OPT_NAME: a->name = optarg; break;
		case OPT_TREE: a->tree = true; break;
		case OPT_NO_WAIT: a->no_wait = true; break;
		case OPT_FIRST: a->first = true; break;
		case OPT_TYPE: a->type = optarg; break;
		case OPT_FOLDER: a->folder = optarg; break;
		case OPT_DEFAULT_FOLDER: a->default_folder = true; break;
		default:
			return cli_error(CLI_EXIT_USAGE, "unknown option or missing argument (see "
					 "'cloison checkpoint --help')");
		}
	}
	a->pos = optind;
	return 0;
}

static void cp_path(char *out, size_t len, const char *vm, const char *cp, const char *tail)
{
	char e1[256], e2[512];

	client_escape(vm, e1, sizeof(e1));
	if (cp) {
		client_escape(cp, e2, sizeof(e2));
		snprintf(out, len, "/v1/vms/%s/checkpoints/%s%s", e1, e2, tail);
	} else {
		snprintf(out, len, "/v1/vms/%s/checkpoints%s", e1, tail);
	}
}

/* Starts the job, follows it unless no_wait, prints the result. */
static int run_job(struct client *c, struct cp_args *a, const char *method, const char *path,
		   json_t *body, const char *what)
{
	json_t *job, *end = NULL;
	int r = cli_job_start(c, method, path, body, &job);

	if (r)
		return r;
	if (a->no_wait) {
		if (a->json)
			print_json(job);
		else
			printf("%s\n", str(job, "id"));
		json_decref(job);
		return CLI_EXIT_OK;
	}
	r = cli_job_follow(c, str(job, "id"), false, &end);
	if (r == CLI_EXIT_OK) {
		json_t *res = json_object_get(end, "result");
		if (a->json) {
			print_json(end);
		} else {
			printf("%s checkpoint '%s'%s%s%s.\n", what, str(res, "name"),
			       *str(res, "type") ? " (" : "", str(res, "type"),
			       *str(res, "type") ? ")" : "");
			if (*str(res, "note"))
				printf("Note: %s.\n", str(res, "note"));
		}
	}
	json_decref(end);
	json_decref(job);
	return r;
}

static void print_subtree(json_t *cps, const char *parent, const char *current, int depth)
{
	size_t i;
	json_t *cp;

	json_array_foreach(cps, i, cp) {
		const char *p = str(cp, "parent");
		if (strcmp(p, parent ? parent : ""))
			continue;
		printf("%*s%s%s  (%s%s, %s, %s)\n", depth * 3, "", depth ? "+- " : "",
		       str(cp, "name"), str(cp, "type"),
		       json_is_true(json_object_get(cp, "saved_state")) ? " with memory" : "",
		       str(cp, "created"), str(cp, "id"));
		print_subtree(cps, str(cp, "id"), current, depth + 1);
	}
	if (!strcmp(current ? current : "", parent ? parent : ""))
		printf("%*s%s> Now\n", depth * 3, "", depth ? "+- " : "");
}

static int verb_list(struct client *c, struct cp_args *a, const char *vm)
{
	char path[1024];
	json_t *resp, *cp;
	size_t i;
	int r;

	cp_path(path, sizeof(path), vm, NULL, "");
	if ((r = client_call(c, "GET", path, NULL, &resp)))
		return r;
	json_t *cps = json_object_get(resp, "checkpoints");
	const char *cur = json_string_value(json_object_get(resp, "current"));
	if (a->json) {
		print_json(resp);
	} else if (a->tree) {
		print_subtree(cps, NULL, cur, 0);
	} else {
		printf("%-36s  %-30s  %-10s  %-6s  %s\n", "ID", "NAME", "TYPE", "MEMORY", "CREATED");
		json_array_foreach(cps, i, cp)
			printf("%-36s  %-30s  %-10s  %-6s  %s%s\n", str(cp, "id"), str(cp, "name"),
			       str(cp, "type"),
			       json_is_true(json_object_get(cp, "saved_state")) ? "yes" : "no",
			       str(cp, "created"),
			       cur && !strcmp(cur, str(cp, "id")) ? "  (Now is below it)" : "");
		if (!json_array_size(cps))
			printf("(no checkpoints: take one with 'cloison vm checkpoint %s')\n", vm);
	}
	json_decref(resp);
	return CLI_EXIT_OK;
}

static int verb_settings(struct client *c, struct cp_args *a, const char *vm)
{
	char path[1024];
	json_t *resp, *body = json_object();
	int r;

	if (a->type)
		json_object_set_new(body, "checkpoint_type", json_string(a->type));
	if (a->folder)
		json_object_set_new(body, "folder", json_string(a->folder));
	if (a->default_folder)
		json_object_set_new(body, "folder", json_null());
	cp_path(path, sizeof(path), vm, NULL, "");
	if (json_object_size(body)) {
		r = client_call(c, "PATCH", path, body, &resp);
	} else {
		r = client_call(c, "GET", path, NULL, &resp);
		if (!r) {
			json_t *s = json_incref(json_object_get(resp, "settings"));
			json_decref(resp);
			resp = s;
		}
	}
	json_decref(body);
	if (r)
		return r;
	if (a->json) {
		print_json(resp);
	} else {
		printf("Checkpoint type:   %s\n", str(resp, "checkpoint_type"));
		printf("Checkpoint folder: %s\n", *str(resp, "folder") ? str(resp, "folder")
								   : "(default: the VM's Snapshots)");
	}
	json_decref(resp);
	return CLI_EXIT_OK;
}

static const char *const verbs[] = { "create", "list", "apply", "rename", "remove",
				     "settings", NULL };

bool cli_checkpoint_is_verb(const char *word)
{
	for (unsigned v = 0; verbs[v]; v++)
		if (!strcmp(verbs[v], word))
			return true;
	return false;
}

int cli_checkpoint(int argc, char **argv)
{
	static const int npos[] = { 1, 1, 2, 3, 2, 1 };
	struct cp_args a = { 0 };
	struct client c;
	char path[1024];
	unsigned v;
	int r;

	if (argc < 2) {
		fputs(usage_text, stderr);
		return cli_error(CLI_EXIT_USAGE, "expected a verb after 'cloison checkpoint'");
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_text, stdout);
		return CLI_EXIT_OK;
	}
	for (v = 0; verbs[v] && strcmp(verbs[v], argv[1]); v++)
		;
	if (!verbs[v]) {
		fputs(usage_text, stderr);
		return cli_error(CLI_EXIT_USAGE, "unknown verb 'checkpoint %s'", argv[1]);
	}
	if ((r = parse(argc - 1, argv + 1, &a)))
		return r;
	if (a.help) {
		fputs(usage_text, stdout);
		return CLI_EXIT_OK;
	}
	char **pos = argv + 1 + a.pos;
	if (argc - 1 - a.pos != npos[v])
		return cli_error(CLI_EXIT_USAGE, "'checkpoint %s' takes %s (see 'cloison checkpoint "
				 "--help')", verbs[v],
				 npos[v] == 1 ? "a VM name" : npos[v] == 2 ? "a VM name and a checkpoint"
									   : "a VM name, a checkpoint and "
									     "its new name");
	if ((r = client_init(&c, a.socket)))
		return r;
	const char *vm = pos[0];
	switch (v) {
	case 0: {
		json_t *body = json_object();
		if (a.name)
			json_object_set_new(body, "name", json_string(a.name));
		cp_path(path, sizeof(path), vm, NULL, "");
		r = run_job(&c, &a, "POST", path, body, "Created");
		json_decref(body);
		return r;
	}
	case 1:
		return verb_list(&c, &a, vm);
	case 2:
		if (a.first) {
			struct cp_args quiet = a;
			quiet.json = false;
			cp_path(path, sizeof(path), vm, NULL, "");
			json_t *body = json_object();
			r = run_job(&c, &quiet, "POST", path, body, "Created");
			json_decref(body);
			if (r)
				return r;
		}
		cp_path(path, sizeof(path), vm, pos[1], "/apply");
		return run_job(&c, &a, "POST", path, NULL, "Applied");
	case 3: {
		json_t *body = json_pack("{s:s}", "name", pos[2]), *resp;
		cp_path(path, sizeof(path), vm, pos[1], "");
		r = client_call(&c, "PATCH", path, body, &resp);
		json_decref(body);
		if (r)
			return r;
		if (a.json)
			print_json(resp);
		else
			printf("Renamed checkpoint '%s' of VM '%s' to '%s'.\n", pos[1], vm, pos[2]);
		json_decref(resp);
		return CLI_EXIT_OK;
	}
	case 4: {
		/* DELETE has no body: the job's options are in the query. */
		json_t *job, *end = NULL;
		cp_path(path, sizeof(path), vm, pos[1], a.tree ? "?subtree=1&wait=0" : "?wait=0");
		if ((r = client_call(&c, "DELETE", path, NULL, &job)))
			return r;
		if (a.no_wait) {
			if (a.json)
				print_json(job);
			else
				printf("%s\n", str(job, "id"));
			json_decref(job);
			return CLI_EXIT_OK;
		}
		r = cli_job_follow(&c, str(job, "id"), false, &end);
		if (r == CLI_EXIT_OK) {
			json_t *res = json_object_get(end, "result");
			if (a.json)
				print_json(end);
			else
				printf("Removed %zu checkpoint(s) of VM '%s'%s%s.\n",
				       json_array_size(json_object_get(res, "removed")), vm,
				       *str(res, "note") ? "; " : "", str(res, "note"));
		}
		json_decref(end);
		json_decref(job);
		return r;
	}
	default:
		return verb_settings(&c, &a, vm);
	}
}
