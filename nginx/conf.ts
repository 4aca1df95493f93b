// Renders nginx's conf.d/default.conf from the same values the network alias and app port come from, and
// checks that a bind-mounted copy is exactly that render. Everything used here exists in nginx 1.13.7 and
// in current nginx, except proxy_socket_keepalive (1.15.6), rendered only with upstreamDeadPeerTimeout, and
// the TLS listener's directives, rendered for the nginx version the image tag names (see nginxVersion).
import * as fs from "fs";
import * as path from "path";
import { APP_METRICS_PORT, appUpstream, NGINX_EXPORTER_ALIAS, NGINX_EXPORTER_PORT, type AppUpstream } from "../app/facts";
import type { StackConfig, TlsSettings } from "../infra/config";

/** Where the official image (and the stand-in) reads the server config. */
export const CONF_PATH = "/etc/nginx/conf.d/default.conf";
/** Served by nginx itself, for its container healthcheck. */
export const NGINX_HEALTH_PATH = "/nginx-health";
/** upstreamTransport unix: replica n's socket volume is mounted read-only here. */
export const nginxSocketDir = (replica: number) => `/srv/sockets/${replica}`;
const DOCKER_DNS = "127.0.0.11";
/** How long nginx caches the app alias's addresses (TCP without keepalive). */
export const NGINX_DNS_CACHE_S = 5;

/** The TLS listener's container port (the program publishes it on httpsPort). */
export const HTTPS_CONTAINER_PORT = 443;
/**
 * Where the TLS listener reads its certificate (leaf, then chain) and key: files in the conf volume, next to
 * the conf, written by the program's ConfFile (internal, certificate), or the ACME agent's certificates
 * volume mounted over the folder (acme): the conf is the same in every mode. The directory is root's alone
 * (0700): nginx's master reads them before dropping privileges.
 */
export const TLS_DIR = "/etc/nginx/conf.d/tls";
export const TLS_CERT_FILE = "fullchain.pem";
export const TLS_KEY_FILE = "privkey.pem";
/** Served at ACME_CHALLENGE_PATH on plain HTTP (never redirected): HTTP-01 tokens go here. */
export const ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/";
export const ACME_WEBROOT = "/etc/nginx/conf.d/acme-challenge";
/** Mozilla's "intermediate" TLS 1.2 suites (guideline 5.7) without the DHE ones, which would need a dhparam file. */
export const INTERMEDIATE_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");
/** HSTS max-age: two years, as Mozilla's generator writes (at least one year is what preload lists ask). */
export const HSTS_MAX_AGE_S = 63072000;

/** An nginx version, compared part by part. */
export type NginxVersion = [number, number, number];

/**
 * The version an image tag names (`nginx:1.27.3`, `nginx:1.25-alpine`, `registry:5000/nginx:1.22.1`); a tag
 * without one (`latest`, `mainline`, `stable`, a digest) is taken for a current nginx. The image's own binary
 * may differ (the stand-ins here are Debian's 1.22 under every tag): `nginx -t` has the last word.
 */
export function nginxVersion(image: string): NginxVersion | undefined {
  const name = image.split("@")[0];
  const tag = name.slice(name.lastIndexOf("/") + 1).split(":")[1] ?? "";
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?(?:$|[-_])/.exec(tag);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

/** Whether `v` is at least `min` (an unknown version is taken for a current one). */
export const atLeast = (v: NginxVersion | undefined, min: NginxVersion): boolean => {
  if (!v) return true;
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i] > min[i];
  return true;
};

export interface NginxTls {
  /** The certificate's domain: server_name of both servers. */
  serverName: string;
  /** Host port HTTPS is published on: where plain HTTP redirects to ($host carries no port). */
  publicPort: number;
  /** Strict-Transport-Security on HTTPS answers. */
  hsts: boolean;
  /** nginx 1.25.1 and later: `http2 on;` (the `listen ... http2` parameter is deprecated there). */
  http2Directive: boolean;
  /** TLS 1.3 offered: not by the official images before 1.17 (Debian stretch's OpenSSL 1.1.0 has none). */
  tls13: boolean;
  /** Session tickets off (Mozilla: nginx before 1.23.2 never rotates their key); later ones rotate it. */
  ticketsOff: boolean;
  /** The folder HTTP-01 tokens are served from (nginx's alias for ACME_CHALLENGE_PATH). */
  challengeDir: string;
}

/**
 * What the TLS listener renders for the stack's mode and its nginx version: the one the image itself declares
 * (`imageVersion`, its NGINX_VERSION, when the engine has the image), else the one its tag names.
 */
export function nginxTls(
  image: string,
  tls: { mode: TlsSettings["mode"]; domain: string; httpsPort: number },
  imageVersion?: string,
): NginxTls {
  const v = (imageVersion ? nginxVersion(`nginx:${imageVersion}`) : undefined) ?? nginxVersion(image);
  return {
    serverName: tls.domain,
    publicPort: tls.httpsPort,
    // internal: no HSTS. Browsers do not trust the stack's CA unless told to, and HSTS forbids clicking through
    // the warning; for localhost it would also pin every port of localhost to HTTPS for a year.
    hsts: tls.mode !== "internal",
    http2Directive: atLeast(v, [1, 25, 1]),
    tls13: atLeast(v, [1, 17, 0]),
    ticketsOff: !atLeast(v, [1, 23, 2]),
    // acme: the agent's webroot volume is mounted on ACME_WEBROOT, and certbot writes the tokens below the path.
    challengeDir: tls.mode === "acme" ? path.posix.join(ACME_WEBROOT, ACME_CHALLENGE_PATH) : `${ACME_WEBROOT}/`,
  };
}

export interface NginxConfOptions {
  /** HTTPS: a TLS server on 443 serving the site, and port 80 redirecting to it; absent: port 80 serves. */
  tls?: NginxTls;
  /** Host name nginx proxies to: the app's network alias. */
  upstreamHost: string;
  upstreamPort: number;
  /**
   * Unix sockets to proxy to instead (one per app replica, on volumes shared with the app): no TCP
   * handshake, bridge or conntrack per request. Empty: TCP to upstreamHost:upstreamPort.
   */
  sockets: string[];
  /** Value of the Host header sent upstream: a literal such as "localhost" (the tutorial) or "$host". */
  hostHeader: string;
  forwardedHeaders: boolean;
  /**
   * 0: resolve the alias through Docker's DNS on every request (a recreated app is found within 5 s).
   * > 0: an upstream block with that many idle keepalive connections; the alias is resolved at start,
   * so the app's address must be pinned (see Replica.address). Sockets need no resolving either way.
   */
  keepalive: number;
  /** Production hardening: limits, timeouts, security headers, no version banner, buffered access log. */
  hardened: boolean;
  /** Serve NGINX_HEALTH_PATH locally, for the container healthcheck. */
  healthEndpoint: boolean;
  /** on: the image's default (a write per request); buffered: one write per 64 KB; off: none. */
  accessLog: "on" | "buffered" | "off";
  /** combined: the image's default; timed: combined plus timings, upstream and ID; json: the same, escaped. */
  accessLogFormat?: AccessLogFormat;
  /**
   * Every request gets an ID: the client's X-Request-ID when well-formed, else nginx's $request_id. Sent to
   * the app and to the client as X-Request-ID.
   */
  requestId?: boolean;
  /** A second listener serving metrics (published on 127.0.0.1 only by the program); absent: none. */
  metrics?: NginxMetrics;
  /**
   * Hardened: seconds to wait for the app's answer. A request unanswered by then gets 504 and is not tried on
   * another replica: it may be slow, not lost, and a retry would run it again. Default 30.
   */
  readTimeoutS?: number;
  /**
   * Hardened, TCP: a request in flight to a node that is lost gets no reset, only silence. With this set,
   * nginx's connections to the app send TCP keepalive probes (timed by deadPeerSysctls in nginx's network
   * namespace); a lost node answers none, so the connection fails after this many seconds, an error retried
   * on another replica. A live app's kernel answers them however slow the app is. Absent: no probes.
   */
  deadPeerTimeoutS?: number;
  /**
   * Plain containers with a conf volume: nginx shares its listening ports with the next nginx container
   * (nginx/handover.ts). Each server's listen lines are an include of the container's own (under /run), so an
   * nginx being replaced can stop listening while its successor serves on the same ports.
   */
  handover?: boolean;
  /** The stack the file was rendered for; written into the header comment. */
  stack: string;
}

export type AccessLogFormat = "combined" | "timed" | "json";

export interface NginxMetrics {
  /** The app's Prometheus endpoint (gunicorn's master), host:port on the network. */
  app: string;
  /** nginx-prometheus-exporter, host:port on the network. */
  exporter: string;
}

/** The metrics listener's container port, on the stack's network; the forwarder publishes it on 127.0.0.1 only. */
export const NGINX_METRICS_PORT = 8080;
/** On the metrics listener: nginx's counters, read by nginx-prometheus-exporter. */
export const STUB_STATUS_PATH = "/stub_status";
/** On the metrics listener: the app's metrics, and nginx's (through the exporter). */
export const APP_METRICS_PATH = "/metrics";
export const NGINX_METRICS_PATH = "/nginx/metrics";
/** Where the forwarder keeps its conf, pid and temp files: /tmp is writable to nobody in any image (a tmpfs when hardened). */
const METRICS_FORWARDER_DIR = "/tmp/metrics-forwarder";

/**
 * The metrics forwarder's whole nginx.conf: the one container that publishes metricsPort (on 127.0.0.1),
 * passing every request to nginx's metrics listener at `edgeHost`. With the port on a container of its own,
 * a new metricsPort replaces the forwarder alone, never nginx's port holder (nginx/nginxProxy.ts).
 */
export function metricsForwarderConf(edgeHost: string): string {
  return [
    "# Rendered by nginx/conf.ts: the metrics forwarder. Requests for 127.0.0.1:metricsPort go to nginx's metrics listener.",
    "worker_processes 1;",
    `pid ${METRICS_FORWARDER_DIR}/nginx.pid;`,
    "error_log stderr warn;",
    "events {",
    "    worker_connections 64;",
    "}",
    "http {",
    "    access_log off;",
    // Under its own directory: it runs as nobody, who can create no directory the image's build names.
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `    ${t}_temp_path ${METRICS_FORWARDER_DIR}/${t};`),
    "    server {",
    `        listen ${NGINX_METRICS_PORT};`,
    // Resolved per request: nginx's holder keeps its name when it is replaced, not its address.
    `        resolver ${DOCKER_DNS} valid=${NGINX_DNS_CACHE_S}s ipv6=off;`,
    `        set $metrics_listener ${edgeHost}:${NGINX_METRICS_PORT};`,
    "        location / {",
    "            proxy_pass http://$metrics_listener;",
    "        }",
    "    }",
    "}",
    "",
  ].join("\n");
}

/** The forwarder's env and command: its conf (metricsForwarderConf) written under its directory, then nginx on it. */
export function metricsForwarderStart(edgeHost: string): { env: string[]; command: string[] } {
  const conf = `${METRICS_FORWARDER_DIR}/nginx.conf`;
  return {
    env: [`FORWARDER_CONF=${metricsForwarderConf(edgeHost)}`],
    command: [
      "sh",
      "-c",
      [
        "set -e",
        `mkdir -p ${METRICS_FORWARDER_DIR}`,
        `printf '%s' "$FORWARDER_CONF" > ${conf}`,
        `exec nginx -c ${conf} -g 'daemon off;'`,
      ].join("\n"),
    ],
  };
}

/** The request ID's header, to the app and to the client. */
export const REQUEST_ID_HEADER = "X-Request-ID";
/** What a client-sent ID must look like to be kept: bounded length and characters, so no log line can be forged. */
export const REQUEST_ID_PATTERN = "^[A-Za-z0-9._-]{1,64}$";

/** nginx's log_format bodies: every field of `combined`, then the request's timings, its upstream and its ID. */
function logFormat(format: Exclude<AccessLogFormat, "combined">, id: string): string[] {
  if (format === "timed") {
    return [
      "log_format timed '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent '",
      '                 \'"$http_referer" "$http_user_agent" rt=$request_time ua="$upstream_addr" \'',
      `                 'us="$upstream_status" ut="$upstream_response_time" id=${id}';`,
    ];
  }
  // escape=json: nginx escapes quotes, backslashes and control bytes in every value. Numbers nginx always
  // writes as numbers stay unquoted; the upstream fields can be "-" or a list ("0.001, 0.002") and are strings.
  return [
    'log_format json escape=json \'{"time":"$time_iso8601","remote_addr":"$remote_addr",\'',
    `    '"request_id":"${id}","method":"$request_method","uri":"$request_uri",'`,
    '    \'"protocol":"$server_protocol","status":$status,"body_bytes_sent":$body_bytes_sent,\'',
    '    \'"request_time":$request_time,"upstream_addr":"$upstream_addr",\'',
    '    \'"upstream_status":"$upstream_status","upstream_response_time":"$upstream_response_time",\'',
    '    \'"referer":"$http_referer","user_agent":"$http_user_agent"}\';',
  ];
}

/** The server's access_log line (none for the image's default). */
function accessLogLines(o: NginxConfOptions): string[] {
  const format = o.accessLogFormat ?? "combined";
  if (o.accessLog === "buffered") {
    return [
      "",
      "    # One write per 64 KB of log instead of one per request.",
      `    access_log /var/log/nginx/access.log ${format} buffer=64k flush=5s;`,
    ];
  }
  if (o.accessLog === "on" && format !== "combined") return ["", `    access_log /var/log/nginx/access.log ${format};`];
  if (o.accessLog === "off") {
    return ["", "    # No access log: nginx's largest per-request cost after the proxying itself.", "    access_log off;"];
  }
  return [];
}

/** nginx's own health path, for the container healthcheck. */
function healthLines(o: NginxConfOptions): string[] {
  if (!o.hardened && !o.healthEndpoint) return [];
  return [
    "",
    `    location = ${NGINX_HEALTH_PATH} {`,
    "        access_log off;",
    "        default_type text/plain;",
    '        return 200 "ok\\n";',
    "    }",
  ];
}

/** Plain HTTP with TLS on: the health path and ACME's challenges are answered, everything else redirected. */
function redirectServer(o: NginxConfOptions, tls: NginxTls): string[] {
  const port = tls.publicPort === HTTPS_CONTAINER_PORT ? "" : `:${tls.publicPort}`;
  return [
    "# Plain HTTP: the healthcheck and ACME HTTP-01 challenges are answered here; every other request is sent",
    "# to the same path and query on HTTPS. $host has no port, so the published HTTPS port is written in.",
    "server {",
    listen(o, "http"),
    `    server_name ${tls.serverName};`,
    ...(o.hardened ? ["    server_tokens off;"] : []),
    ...accessLogLines(o),
    ...healthLines(o),
    "",
    `    location ^~ ${ACME_CHALLENGE_PATH} {`,
    `        alias ${tls.challengeDir};`,
    "        default_type text/plain;",
    "    }",
    "",
    "    location / {",
    `        return 301 https://$host${port}$request_uri;`,
    "    }",
    "}",
    "",
  ];
}

/** The TLS listener: HTTP/2, TLS 1.2 and 1.3, Mozilla's intermediate settings, the certificate files. */
function tlsListen(o: NginxConfOptions, tls: NginxTls): string[] {
  return [
    listen(o, "https"),
    ...(tls.http2Directive ? ["    http2 on;"] : []),
    `    server_name ${tls.serverName};`,
    "",
    `    ssl_certificate ${TLS_DIR}/${TLS_CERT_FILE};`,
    `    ssl_certificate_key ${TLS_DIR}/${TLS_KEY_FILE};`,
    "    # Mozilla's intermediate configuration (guideline 5.7).",
    `    ssl_protocols ${tls.tls13 ? "TLSv1.2 TLSv1.3" : "TLSv1.2"};`,
    "    ssl_ecdh_curve X25519:prime256v1:secp384r1;",
    `    ssl_ciphers ${INTERMEDIATE_CIPHERS};`,
    "    ssl_prefer_server_ciphers off;",
    "    # Resumption from a cache all workers share (about 40,000 sessions); it survives a reload.",
    "    ssl_session_cache shared:MozSSL:10m;",
    "    ssl_session_timeout 1d;",
    ...(tls.ticketsOff
      ? [
          "    # This nginx never rotates the ticket key: tickets off, the cache resumes sessions.",
          "    ssl_session_tickets off;",
        ]
      : []),
  ];
}

/** A server's listen line: its own, or (handover) the include of the container's file that holds it. */
function listen(o: NginxConfOptions, listener: Listener): string {
  if (o.handover) return `    include ${listenFile(listener)};`;
  const tls = o.tls;
  if (listener === "https" && tls) return `    listen ${HTTPS_CONTAINER_PORT} ssl${tls.http2Directive ? "" : " http2"};`;
  return `    listen ${listener === "metrics" ? NGINX_METRICS_PORT : 80};`;
}

export function renderNginxConf(o: NginxConfOptions): string {
  const target = `${o.upstreamHost}:${o.upstreamPort}`;
  const hostValue = o.hostHeader.startsWith("$") ? o.hostHeader : `"${o.hostHeader}"`;
  const lines: string[] = [
    `# Rendered for stack "${o.stack}" by nginx/conf.ts (npm run render:nginx). Edit the stack config`,
    `# or the renderer, not this file: the program refuses to mount a copy that differs from the render.`,
  ];
  const format = o.accessLogFormat ?? "combined";
  const id = o.requestId ? "$req_id" : "$request_id";
  if (o.requestId) {
    lines.push(
      "# Each request's ID: the client's X-Request-ID if it is well-formed, else nginx's own. Anything else a",
      "# client sends there is dropped, so no log line carries it.",
      `map $http_x_request_id $req_id {`,
      "    default $request_id;",
      `    "~${REQUEST_ID_PATTERN}" $http_x_request_id;`,
      "}",
      "",
    );
  }
  if (format !== "combined") lines.push(...logFormat(format, id), "");
  // An upstream block names fixed targets: the sockets, or the alias resolved once at start.
  const upstreamBlock = o.sockets.length > 0 || o.keepalive > 0;
  if (upstreamBlock) {
    lines.push("upstream flask_app {");
    if (o.sockets.length > 0) {
      lines.push("    # The app's unix sockets (one per replica): no TCP handshake or bridge hop per request.");
      lines.push(...o.sockets.map((s) => `    server unix:${s};`));
    } else {
      lines.push(`    server ${target};`);
    }
    if (o.keepalive > 0) {
      lines.push(
        "    # Idle connections kept open to the app: saves a connection setup per request.",
        `    keepalive ${o.keepalive};`,
      );
    }
    lines.push("}", "");
  }
  if (o.tls) lines.push(...redirectServer(o, o.tls), "server {", ...tlsListen(o, o.tls));
  else lines.push("server {", listen(o, "http"), "    server_name localhost;");
  if (o.hardened) {
    lines.push(
      "",
      "    server_tokens off;",
      "    autoindex off;",
      "    # Limits below nginx's defaults (1m body, 8k header lines): the app takes no uploads, and no",
      "    # legitimate header line is longer than a browser's 4 KB cookie. Oversized input gets 413/400.",
      "    client_max_body_size 64k;",
      "    client_body_buffer_size 16k;",
      "    client_header_buffer_size 1k;",
      "    large_client_header_buffers 4 4k;",
      "    # Slow clients are cut off instead of holding a connection open.",
      "    client_header_timeout 10s;",
      "    client_body_timeout 10s;",
      "    send_timeout 10s;",
      "    keepalive_timeout 30s;",
      "    keepalive_requests 1000;",
      "",
      "    add_header X-Content-Type-Options nosniff always;",
      "    add_header X-Frame-Options DENY always;",
      "    add_header Referrer-Policy no-referrer always;",
    );
  }
  if (o.tls?.hsts) lines.push(`    add_header Strict-Transport-Security "max-age=${HSTS_MAX_AGE_S}" always;`);
  if (o.requestId) lines.push("", `    add_header ${REQUEST_ID_HEADER} $req_id always;`);
  lines.push(...accessLogLines(o), ...healthLines(o));
  if (!upstreamBlock) {
    lines.push(
      "",
      "    # Docker's embedded DNS. A variable in proxy_pass makes nginx resolve the alias per request",
      "    # (cached 5 s) instead of once at start, so a recreated app container is found again.",
      `    resolver ${DOCKER_DNS} valid=${NGINX_DNS_CACHE_S}s ipv6=off;`,
      `    set $flask_upstream ${target};`,
    );
  }
  lines.push("", "    location / {");
  if (upstreamBlock) {
    lines.push("        proxy_pass http://flask_app;");
    if (o.keepalive > 0) lines.push("        proxy_http_version 1.1;", '        proxy_set_header Connection "";');
  } else {
    // With a variable, proxy_pass must not carry a URI part or every request would be sent to that URI;
    // without one the original URI is passed, which for "location /" is what the tutorial's trailing "/" did.
    lines.push("        proxy_pass http://$flask_upstream;");
  }
  lines.push(`        proxy_set_header Host ${hostValue};`);
  if (o.requestId) lines.push(`        proxy_set_header ${REQUEST_ID_HEADER} $req_id;`);
  // When nginx handed the request on, so the app can tell its own time from the time the request waited.
  if (o.metrics) lines.push('        proxy_set_header X-Request-Start "t=${msec}";');
  if (o.forwardedHeaders) {
    lines.push(
      "        proxy_set_header X-Real-IP $remote_addr;",
      "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
      "        proxy_set_header X-Forwarded-Proto $scheme;",
      "        proxy_set_header X-Forwarded-Host $host;",
    );
  } else if (o.tls) {
    // The scheme nginx was reached by, always set here: gunicorn trusts it on nginx's socket.
    lines.push("        proxy_set_header X-Forwarded-Proto $scheme;");
  }
  if (o.hardened) {
    const readTimeoutS = o.readTimeoutS ?? 30;
    lines.push(
      "        proxy_connect_timeout 2s;",
      "        proxy_send_timeout 30s;",
      `        proxy_read_timeout ${readTimeoutS}s;`,
    );
    if (o.deadPeerTimeoutS !== undefined && o.sockets.length === 0) {
      lines.push(
        `        # Keepalive probes to the app: a lost node answers none, and its connections fail after ${o.deadPeerTimeoutS} s`,
        "        # (an error, retried below); a slow but live app's kernel answers them.",
        "        proxy_socket_keepalive on;",
      );
    }
    lines.push(
      "        # A refused, reset or dead connection, or a connect that timed out, is retried on the next server or a",
      "        # fresh connection; a try that waited out the read timeout is not (the app may still be running it).",
      "        proxy_next_upstream error timeout http_502 http_503;",
      `        proxy_next_upstream_timeout ${readTimeoutS}s;`,
      "        proxy_next_upstream_tries 3;",
    );
  }
  lines.push("    }", "}", "");
  if (o.metrics) {
    lines.push(
      "# Metrics: a listener of its own on the stack's network, for the exporter and the metrics forwarder (which alone",
      "# publishes it, on 127.0.0.1); never on the public port.",
      "server {",
      listen(o, "metrics"),
      "    server_name metrics;",
      "    access_log off;",
      `    resolver ${DOCKER_DNS} valid=${NGINX_DNS_CACHE_S}s ipv6=off;`,
      `    set $app_metrics ${o.metrics.app};`,
      `    set $nginx_exporter ${o.metrics.exporter};`,
      "",
      `    location = ${STUB_STATUS_PATH} {`,
      "        stub_status;",
      "    }",
      `    location = ${APP_METRICS_PATH} {`,
      "        proxy_pass http://$app_metrics;",
      "    }",
      `    location = ${NGINX_METRICS_PATH} {`,
      "        proxy_pass http://$nginx_exporter/metrics;",
      "    }",
      "    location / {",
      "        return 404;",
      "    }",
      "}",
      "",
    );
  }
  return lines.join("\n");
}

/**
 * The conf a stack's nginx serves: its settings, and where the app listens; `imageVersion`: the nginx version
 * the base image declares (see nginxTls).
 */
export function stackNginxConf(
  cfg: StackConfig,
  upstream: AppUpstream = appUpstream(cfg.app),
  imageVersion?: string,
  handover = handsOver(cfg),
): string {
  return renderNginxConf({
    stack: cfg.stack,
    tls: cfg.nginx.tls ? nginxTls(cfg.nginx.baseImage, cfg.nginx.tls, imageVersion) : undefined,
    upstreamHost: upstream.host,
    upstreamPort: upstream.port,
    sockets: Array.from({ length: upstream.sockets }, (_, i) => `${nginxSocketDir(i + 1)}/${upstream.socketFile}`),
    hostHeader: cfg.nginx.hostHeader,
    forwardedHeaders: cfg.nginx.forwardedHeaders,
    keepalive: cfg.nginx.keepalive,
    hardened: cfg.hardened,
    healthEndpoint: cfg.healthchecks,
    accessLog: cfg.nginx.accessLog,
    accessLogFormat: cfg.nginx.accessLogFormat,
    requestId: cfg.nginx.requestId,
    metrics: cfg.metrics
      ? { app: `${upstream.host}:${APP_METRICS_PORT}`, exporter: `${NGINX_EXPORTER_ALIAS}:${NGINX_EXPORTER_PORT}` }
      : undefined,
    readTimeoutS: cfg.nginx.readTimeoutS,
    deadPeerTimeoutS: cfg.nginx.deadPeerTimeoutS,
    handover,
  });
}

/**
 * Whether the stack's nginx hands its ports over on a replacement: it reads a rendered conf (not the dev
 * stack's bind-mounted file). On swarm too: there nginx runs as plain containers on the edge node, joined to
 * the overlay network (nginx/nginxProxy.ts), because a service's host-mode port cannot be held by two tasks.
 */
export const handsOver = (cfg: StackConfig): boolean => !cfg.nginx.configFile;

/** The servers whose listen lines a handover switches. */
export const LISTENERS = ["http", "https", "metrics"] as const;
export type Listener = (typeof LISTENERS)[number];
/** Handover: each nginx container's own listen lines, in its private /run (a tmpfs when hardened). */
export const LISTEN_DIR = "/run/flask-proxy";
export const listenFile = (listener: Listener) => `${LISTEN_DIR}/${listener}.listen`;
/** Handover: nginx's health path on a socket of the container's own, so its check reaches it and not its peer. */
export const NGINX_HEALTH_SOCKET = `${LISTEN_DIR}/health.sock`;

/**
 * What each listen file holds while the container serves: the shared ports, opened with SO_REUSEPORT so the
 * old and the new nginx both accept on them during a handover (the health socket rides with plain HTTP).
 */
export function servingListens(tls: NginxTls | undefined): Record<Listener, string> {
  return {
    http: `listen 80 reuseport; listen unix:${NGINX_HEALTH_SOCKET};`,
    https: `listen ${HTTPS_CONTAINER_PORT} ssl${tls && !tls.http2Directive ? " http2" : ""} reuseport;`,
    metrics: `listen ${NGINX_METRICS_PORT} reuseport;`,
  };
}

/** What they hold once drained: a socket of the container's own each, so no shared port is listened on. */
export const drainedListen = (listener: Listener): string => `listen unix:${LISTEN_DIR}/drained-${listener}.sock;`;

/**
 * The kernel settings of nginx's network namespace that time the keepalive probes proxy_socket_keepalive
 * enables: the first after 1 s without a packet from the app, then one a second, and the connection fails
 * when `timeoutS - 1` in a row go unanswered, `timeoutS` seconds after the app's last packet. Only sockets
 * that ask for keepalive use them (nginx's upstream connections; not its client connections).
 */
export function deadPeerSysctls(timeoutS: number): Record<string, string> {
  return {
    "net.ipv4.tcp_keepalive_time": "1",
    "net.ipv4.tcp_keepalive_intvl": "1",
    "net.ipv4.tcp_keepalive_probes": String(timeoutS - 1),
  };
}

/**
 * A bind-mounted conf (nginxConfigFile) must be exactly what the stack's config renders, so alias, port
 * and proxy settings cannot drift from what the network and app use. Runs before anything is declared.
 */
export function checkMountedConf(cfg: StackConfig): string[] {
  const file = cfg.nginx.configFile;
  if (file === undefined) return [];
  const key = `${cfg.project}:nginxConfigFile`;
  let actual: string;
  try {
    actual = fs.readFileSync(file, "utf8");
  } catch (e) {
    return [`${key}: cannot read ${file} (${(e as Error).message})`];
  }
  if (actual === stackNginxConf(cfg)) return [];
  return [
    `${key}: ${file} differs from the config rendered for stack "${cfg.stack}" ` +
      "(alias, port or proxy settings changed); run `npm run render:nginx` and commit the result",
  ];
}
