#!/bin/sh
# fetch-npm-tarball.sh NAME VERSION INTEGRITY OUT — download a package tarball from the npm registry
# (NPM_CONFIG_REGISTRY, default the public one) and refuse it unless its sha512 matches INTEGRITY
# (the `sha512-<base64>` form of package-lock.json).
set -eu
name=$1 version=$2 integrity=$3 out=$4
registry=${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org/}
url="${registry%/}/$name/-/$(basename "$name")-$version.tgz"
curl -fsSL --retry 3 -o "$out" "$url"
want=$(printf %s "${integrity#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
got=$(sha512sum "$out" | cut -d' ' -f1)
if [ "$want" != "$got" ]; then
    # The verdict first: build tools show the start of this line.
    echo "fetch-npm-tarball: $name@$version does not match the pinned sha512 (got $got, pinned $want, from $url)" >&2
    rm -f "$out"
    exit 1
fi
