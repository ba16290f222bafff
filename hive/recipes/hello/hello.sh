#!/bin/sh
# hello: the smallest possible hive worker.
echo "hello from ${1:-the hive}"
