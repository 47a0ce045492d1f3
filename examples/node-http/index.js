// A Gust process function in Node.js, with no packages: it serves HTTP on
// $PORT and stays up between requests.
const http = require("node:http");

let served = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    served++;
    const body = Buffer.concat(chunks).toString();
    console.log(`${req.method} ${req.url}`); // the invocation's log
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({ message: "hello from node", method: req.method, url: req.url, body, served }));
  });
});
server.listen(Number(process.env.PORT), "127.0.0.1");
