# shellcheck shell=bash
# Sourced by the scripts beside it: pinned Go tools, installed with `go install` into clients/go/.tools
# (git-ignored), one directory per version, so a version bump here is all it takes to move.

GO_TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools"

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2

# go_tool PKG@VERSION: prints the path of the tool's binary, installing it first if needed.
go_tool() {
    local spec=$1 name version dir
    name=$(basename "${spec%@*}")
    version=${spec#*@}
    dir="$GO_TOOLS_DIR/$name-$version"
    if [ ! -x "$dir/$name" ]; then
        echo "==> go install $spec" >&2
        GOBIN="$dir" GOFLAGS=-mod=mod go install "$spec" >&2
    fi
    printf '%s\n' "$dir/$name"
}
