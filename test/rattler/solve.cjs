// Solves specs against channels with rattler's gateway, as pixi does, and
// prints the solved records as JSON, one object per package.
//
// Usage: node solve.cjs CHANNEL[,CHANNEL...] PLATFORM[,PLATFORM...] SPEC...
// A self-signed certificate is trusted through NODE_EXTRA_CA_CERTS.
const { simpleSolve } = require("@conda-org/rattler");

async function main() {
  const [channels, platforms, ...specs] = process.argv.slice(2);
  if (!channels || !platforms || specs.length === 0) {
    console.error("usage: node solve.cjs CHANNELS PLATFORMS SPEC...");
    process.exit(2);
  }
  const solved = await simpleSolve(specs, channels.split(","), platforms.split(","), []);
  const out = solved.map((p) => ({
    name: p.packageName,
    version: p.version,
    build: p.build,
    filename: p.filename,
    url: p.url,
    subdir: p.subdir,
    sha256: p.sha256,
    md5: p.md5,
    size: p.size === undefined ? null : Number(p.size),
  }));
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
