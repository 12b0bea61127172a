/* cloison job: list, show, wait for and cancel cloisond's jobs, and the
 * follower the verbs that start a job (vm save, checkpoint ...) share. */
#ifndef CLOISON_CLI_JOB_H
#define CLOISON_CLI_JOB_H

#include <jansson.h>
#include <stdbool.h>

#include "cli/client.h"

/* The noun's entry point (main.c's table). */
int cli_job(int argc, char **argv);

/* Follows job id until it ends, polling GET /v1/jobs/{id}. On a terminal,
 * a progress bar goes to stderr; with json_events each change of progress
 * is printed on stdout as one JSON line ({"event":"progress", ...}).
 * Returns CLI_EXIT_OK when the job completed, else the exit status its
 * error maps to, after printing the error. *final (may be NULL) gets the
 * job's last JSON (caller decrefs). */
int cli_job_follow(struct client *c, const char *id, bool json_events, json_t **final);

/* Starts a job with POST path (body may be NULL; {"wait": false} is added)
 * and prints what a --no-wait caller needs (the id, or the job's JSON).
 * *job gets the job's JSON (caller decrefs) when it is not NULL. Returns a
 * CLI exit status. */
int cli_job_start(struct client *c, const char *method, const char *path, json_t *body,
		  json_t **job);

#endif
