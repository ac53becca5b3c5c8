// SqlRows: the rows of a one-column query on a SQLite file opened read-only (a live
// coordinator's database included: WAL lets readers in). Empty when the file cannot be opened
// or the query fails. Header-only; the including target links SQLite. Thread-safe.
#ifndef DD2_TESTS_TESTING_SQL_ROWS_H_
#define DD2_TESTS_TESTING_SQL_ROWS_H_

#include <sqlite3.h>

#include <string>
#include <vector>

namespace dd2::testing {

inline std::vector<std::string> SqlRows(const std::string& db_path, const std::string& query) {
  sqlite3* db = nullptr;
  std::vector<std::string> rows;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return rows;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, query.c_str(), -1, &stmt, nullptr);
  while (stmt && sqlite3_step(stmt) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(stmt, 0);
    rows.push_back(t ? reinterpret_cast<const char*>(t) : "");
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

}  // namespace dd2::testing

#endif  // DD2_TESTS_TESTING_SQL_ROWS_H_
