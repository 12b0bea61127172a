/* GET /v1/host: host facts (host.c), for `cloison host info`. */
#include "daemon/api/api.h"

void api_host(struct api_request *req)
{
	api_reply(req, 200, host_info_json(req->d));
}
