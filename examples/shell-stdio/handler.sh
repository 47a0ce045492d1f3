#!/bin/sh
# A Gust stdio function: the request body arrives on stdin, the request's
# details in CGI variables; what it prints is a CGI response.
words=$(wc -w)
method=$REQUEST_METHOD
if [ "$method" = HEAD ]; then
	method=GET # a HEAD is answered with the GET's headers, and no body
fi
body="$method $PATH_INFO: $words words"
echo "Content-Type: text/plain"
if [ "$REQUEST_METHOD" = HEAD ]; then
	echo "Content-Length: $((${#body} + 1))"
	echo
	exit 0
fi
echo
echo "$body"
echo "handled $GUST_INVOCATION_ID" >&2
