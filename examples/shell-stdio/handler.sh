#!/bin/sh
# A Gust stdio function: the request body arrives on stdin, the request's
# details in CGI variables; what it prints is a CGI response.
words=$(wc -w)
echo "Content-Type: text/plain"
echo
echo "$REQUEST_METHOD $PATH_INFO: $words words"
echo "handled $GUST_INVOCATION_ID" >&2
