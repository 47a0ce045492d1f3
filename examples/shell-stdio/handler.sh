#!/bin/sh
# A Gust stdio function: the request body arrives on stdin, the request's
# details in CGI variables; what it prints is a CGI response.
words=$(wc -w)
method=$REQUEST_METHOD
if [ "$method" = HEAD ]; then
	method=GET # a HEAD is answered with the GET's headers, and no body
fi
body=$(printf '%s: %s words' "$method $PATH_INFO" "$words")
echo "Content-Type: text/plain"
if [ "$REQUEST_METHOD" = HEAD ]; then
	echo "Content-Length: $(printf '%s\n' "$body" | wc -c)"
	echo
	exit 0
fi
echo
printf '%s\n' "$body"
echo "handled $GUST_INVOCATION_ID" >&2
