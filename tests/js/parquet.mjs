// Reads a Parquet file with hyparquet (an independent reader) and prints its rows as a JSON array of objects.
// Usage: node parquet.mjs FILE.parquet
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';

const file = await asyncBufferFromFile(process.argv[2]);
const rows = await parquetReadObjects({ file });
process.stdout.write(JSON.stringify(rows, (_, v) => (typeof v === 'bigint' ? Number(v) : v)));
