// The variables current nginx's http core, proxy and realip modules define (nginx.org/en/docs/varindex.html),
// so that a config value naming an nginx variable is checked before `nginx -t` is. An older nginx lacks some
// (e.g. $proxy_protocol_tlv_* came in 1.23.2, $connection_time in 1.19.10): `nginx -t` still has the last word.

const NAMES: ReadonlySet<string> = new Set([
  // ngx_http_core_module
  "args",
  "binary_remote_addr",
  "body_bytes_sent",
  "bytes_sent",
  "connection",
  "connection_requests",
  "connection_time",
  "content_length",
  "content_type",
  "document_root",
  "document_uri",
  "host",
  "hostname",
  "https",
  "is_args",
  "limit_rate",
  "msec",
  "nginx_version",
  "pid",
  "pipe",
  "proxy_protocol_addr",
  "proxy_protocol_port",
  "proxy_protocol_server_addr",
  "proxy_protocol_server_port",
  "query_string",
  "realpath_root",
  "remote_addr",
  "remote_port",
  "remote_user",
  "request",
  "request_body",
  "request_body_file",
  "request_completion",
  "request_filename",
  "request_id",
  "request_length",
  "request_method",
  "request_time",
  "request_uri",
  "scheme",
  "server_addr",
  "server_name",
  "server_port",
  "server_protocol",
  "status",
  "tcpinfo_rtt",
  "tcpinfo_rttvar",
  "tcpinfo_snd_cwnd",
  "tcpinfo_rcv_space",
  "time_iso8601",
  "time_local",
  "uri",
  // ngx_http_proxy_module
  "proxy_add_x_forwarded_for",
  "proxy_host",
  "proxy_port",
  // ngx_http_realip_module
  "realip_remote_addr",
  "realip_remote_port",
]);

/** Families named after a header, cookie, argument or PROXY protocol TLV: $http_user_agent, $cookie_id, ... */
const PREFIXES = ["http_", "sent_http_", "sent_trailer_", "cookie_", "arg_", "proxy_protocol_tlv_"];

/** Whether `name` (without the `$`) is one of those variables. */
export function isNginxVariable(name: string): boolean {
  return NAMES.has(name) || PREFIXES.some((p) => name.length > p.length && name.startsWith(p));
}
